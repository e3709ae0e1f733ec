// Optimizer updates on f32 master weights (src/train/optim/fused.rs), one
// kernel launch per parameter tensor, one thread per element: PyTorch's SGD (momentum,
// dampening, Nesterov, weight decay) and AdamW. Each performs the CPU kernels' f32 operations
// in the same order (src/train/optim/fused.rs); this module is compiled without FMA
// contraction, so a step gives the CPU's bits from the same inputs. Then the step's gradient
// checks: every gradient's sum of squares and non-finite count, all tensors in one launch.

// p -= lr * d, with g' = g + wd * p, buf = g' (first step) or m * buf + (1 - dampening) * g',
// d = buf (momentum), g' + m * buf (Nesterov) or g' (no momentum).
extern "C" __global__ void sgd_step(float* __restrict__ p, const float* __restrict__ g,
                                    float* __restrict__ buf, unsigned n, float lr, float m,
                                    float one_minus_dampening, float wd, int has_momentum,
                                    int nesterov, int first) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float pi = p[i];
        float gi = wd != 0.0f ? g[i] + pi * wd : g[i];
        float d = gi;
        if (has_momentum) {
            float b = first ? gi : buf[i] * m + gi * one_minus_dampening;
            buf[i] = b;
            d = nesterov ? gi + b * m : b;
        }
        p[i] = pi - d * lr;
    }
}

// m += (g - m) * (1 - b1); v = v * b2 + g^2 * (1 - b2);
// p = p * decay - m / (sqrt(v) * inv_bc2_sqrt + eps) * step_size.
extern "C" __global__ void adamw_step(float* __restrict__ p, const float* __restrict__ g,
                                      float* __restrict__ m, float* __restrict__ v, unsigned n,
                                      float one_minus_beta1, float beta2, float one_minus_beta2,
                                      float decay, float inv_bc2_sqrt, float eps,
                                      float step_size) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = m[i];
        mi += (gi - mi) * one_minus_beta1;
        float vi = v[i] * beta2 + (gi * gi) * one_minus_beta2;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) * inv_bc2_sqrt + eps;
        p[i] = p[i] * decay - (mi / denom) * step_size;
    }
}

// The step's gradient checks in one pass over every gradient (src/train/optim/grad_check.rs,
// whose CPU code makes the same additions in the same order, so both give the same bits): per
// f32 tensor, the sum of its squares and the count of its non-finite values.
//
// Pass one, `grad_check_parts`: one block of 256 threads per chunk of 4096 elements of one
// tensor. Tensor t's chunks are blocks first_block[t] .. first_block[t + 1] - 1 (at least one
// each; first_block[n] is the grid's size). Thread i adds the squares of the chunk's elements
// i, i + 256, ... in order; block_sum adds the threads'. parts[b] is block b's sum of
// squares, parts[first_block[n] + b] its count of non-finite values.
// Pass two, `grad_check_sum`: one block per tensor adds its chunks' parts the same way into
// out[t] (sum of squares) and out[n + t] (non-finite count).
#define GC_THREADS 256u
#define GC_CHUNK 4096u

extern "C" __global__ void grad_check_parts(const unsigned long long* __restrict__ ptrs,
                                            const unsigned* __restrict__ lens,
                                            const unsigned* __restrict__ first_block,
                                            unsigned n, float* __restrict__ parts) {
    __shared__ float sh[GC_THREADS / 32];
    unsigned b = blockIdx.x;
    // the tensor of block b: the last t with first_block[t] <= b
    unsigned lo = 0, hi = n;  // first_block[lo] <= b < first_block[hi]
    while (hi - lo > 1) {
        unsigned mid = lo + (hi - lo) / 2;
        if (first_block[mid] <= b) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    const float* g = (const float*)ptrs[lo];
    unsigned len = lens[lo];
    unsigned start = (b - first_block[lo]) * GC_CHUNK;
    unsigned end = len - start < GC_CHUNK ? len : start + GC_CHUNK;
    float sq = 0.0f, bad = 0.0f;
    for (unsigned k = start + threadIdx.x; k < end; k += GC_THREADS) {
        float v = g[k];
        sq += v * v;
        if ((__float_as_uint(v) & 0x7f800000u) == 0x7f800000u) {
            bad += 1.0f;
        }
    }
    sq = block_sum(sq, sh);
    bad = block_sum(bad, sh);
    if (threadIdx.x == 0) {
        parts[b] = sq;
        parts[first_block[n] + b] = bad;
    }
}

extern "C" __global__ void grad_check_sum(const unsigned* __restrict__ first_block, unsigned n,
                                          const float* __restrict__ parts,
                                          float* __restrict__ out) {
    __shared__ float sh[GC_THREADS / 32];
    unsigned t = blockIdx.x;
    unsigned total = first_block[n];
    float sq = 0.0f, bad = 0.0f;
    for (unsigned k = first_block[t] + threadIdx.x; k < first_block[t + 1]; k += GC_THREADS) {
        sq += parts[k];
        bad += parts[total + k];
    }
    sq = block_sum(sq, sh);
    bad = block_sum(bad, sh);
    if (threadIdx.x == 0) {
        out[t] = sq;
        out[n + t] = bad;
    }
}
