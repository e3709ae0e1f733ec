// BatchNorm over the channels of NCHW input with an optional fused activation
// (src/kernels/batchnorm.rs), f32 parameters and statistics, input and output in T.
//
// Per-channel f32 vectors: `wb` = [weight | bias], `stat` = [mean | var] (train mode: the batch
// statistics; eval mode: the running ones); the input gradient also reads
// `sums` = [sum g'*xhat | sum g'] (the weight and bias gradients), g' being the gradient
// masked by the activation. Statistics are two passes (mean, then squared deviations), each a partial sum
// per block (channel, slice of the N*HW positions) and an in-order sum over the slices.
// act: 0 none, 1 ReLU, 2 ReLU6.

__device__ __forceinline__ float bn_act(float z, int act) {
    if (act == 1) return z > 0.0f ? z : 0.0f;
    if (act == 2) return z > 0.0f ? (z < 6.0f ? z : 6.0f) : 0.0f;
    return z;
}

__device__ __forceinline__ bool bn_pass(float z, int act) {
    if (act == 1) return z > 0.0f;
    if (act == 2) return z > 0.0f && z < 6.0f;
    return true;
}

// Block (c, s) of a (C, S) grid: parts[s * C + c] = the sum over slice s of x (mean == null)
// or of (x - mean[c])^2.
template <class T>
__device__ void bn_stat_parts(const T* __restrict__ x, const float* __restrict__ mean,
                              float* __restrict__ parts, int N, int C, int HW) {
    __shared__ float sh[32];
    int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    unsigned total = (unsigned)N * HW;
    unsigned lo = (unsigned)((unsigned long long)total * s / S);
    unsigned hi = (unsigned)((unsigned long long)total * (s + 1) / S);
    float m = mean ? mean[c] : 0.0f;
    float acc = 0.0f;
    for (unsigned i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        unsigned n = i / HW, q = i % HW;
        float v = ld(x[((size_t)n * C + c) * HW + q]);
        if (mean) {
            float d = v - m;
            acc += d * d;
        } else {
            acc += v;
        }
    }
    float t = block_sum(acc, sh);
    if (threadIdx.x == 0) parts[(size_t)s * C + c] = t;
}

template <class T>
__device__ void bn_fwd(const T* __restrict__ x, const float* __restrict__ wb, const float* __restrict__ stat, T* __restrict__ y,
                       int N, int C, int HW, float eps, int act) {
    unsigned total = (unsigned)N * C * HW;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int c = (i / HW) % C;
        float scale = wb[c] * rsqrtf(stat[C + c] + eps);
        float shift = wb[C + c] - stat[c] * scale;
        st(&y[i], bn_act(ld(x[i]) * scale + shift, act));
    }
}

// Block (c, s): parts[(2 s) * C + c] = sum g' * xhat, parts[(2 s + 1) * C + c] = sum g', over
// slice s.
template <class T>
__device__ void bn_bwd_parts(const T* __restrict__ x, const T* __restrict__ g,
                             const float* __restrict__ wb, const float* __restrict__ stat, float* __restrict__ parts, int N, int C,
                             int HW, float eps, int act) {
    __shared__ float sh[32];
    int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    unsigned total = (unsigned)N * HW;
    unsigned lo = (unsigned)((unsigned long long)total * s / S);
    unsigned hi = (unsigned)((unsigned long long)total * (s + 1) / S);
    float mean = stat[c];
    float rstd = rsqrtf(stat[C + c] + eps);
    float scale = wb[c] * rstd;
    float shift = wb[C + c] - mean * scale;
    float agx = 0.0f, ag = 0.0f;
    for (unsigned i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        unsigned n = i / HW, q = i % HW;
        size_t at = ((size_t)n * C + c) * HW + q;
        float xv = ld(x[at]);
        float gv = bn_pass(xv * scale + shift, act) ? ld(g[at]) : 0.0f;
        ag += gv;
        agx += gv * (xv - mean) * rstd;
    }
    float tgx = block_sum(agx, sh);
    float tg = block_sum(ag, sh);
    if (threadIdx.x == 0) {
        parts[((size_t)s * 2) * C + c] = tgx;
        parts[((size_t)s * 2 + 1) * C + c] = tg;
    }
}

// train: the gradient through the batch statistics too.
template <class T>
__device__ void bn_bwd_input(const T* __restrict__ x, const T* __restrict__ g,
                             const float* __restrict__ wb, const float* __restrict__ stat, const float* __restrict__ sums,
                             T* __restrict__ gx, int N, int C, int HW, float eps, int act,
                             int train) {
    unsigned total = (unsigned)N * C * HW;
    float m = (float)N * (float)HW;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int c = (i / HW) % C;
        float mean = stat[c];
        float rstd = rsqrtf(stat[C + c] + eps);
        float scale = wb[c] * rstd;
        float xv = ld(x[i]);
        float gv = bn_pass(xv * scale + wb[C + c] - mean * scale, act) ? ld(g[i]) : 0.0f;
        if (train) {
            float sgx = sums[c], sg = sums[C + c];
            float k = wb[c] * rstd / m;
            st(&gx[i], k * (m * gv - sg - (xv - mean) * rstd * sgx));
        } else {
            st(&gx[i], scale * gv);
        }
    }
}

#define BN_ENTRIES(S, T)                                                                       \
    extern "C" __global__ void bn_stat_parts_##S(const T* x, const float* mean, float* parts,  \
                                                 int N, int C, int HW) {                       \
        bn_stat_parts<T>(x, mean, parts, N, C, HW);                                            \
    }                                                                                          \
    extern "C" __global__ void bn_fwd_##S(const T* x, const float* wb, const float* stat, T* y, int N, int C,      \
                                          int HW, float eps, int act) {                        \
        bn_fwd<T>(x, wb, stat, y, N, C, HW, eps, act);                                                \
    }                                                                                          \
    extern "C" __global__ void bn_bwd_parts_##S(const T* x, const T* g, const float* wb, const float* stat,        \
                                                float* parts, int N, int C, int HW, float eps, \
                                                int act) {                                     \
        bn_bwd_parts<T>(x, g, wb, stat, parts, N, C, HW, eps, act);                                   \
    }                                                                                          \
    extern "C" __global__ void bn_bwd_input_##S(const T* x, const T* g, const float* wb, const float* stat,        \
                                                const float* sums, T* gx, int N, int C,        \
                                                int HW, float eps, int act, int train) {       \
        bn_bwd_input<T>(x, g, wb, stat, sums, gx, N, C, HW, eps, act, train);                         \
    }

RUNNER_FOR_EACH_DTYPE(BN_ENTRIES)

// out[j] = scale * (sum over s of parts[s * M + j]), for j < M.
extern "C" __global__ void bn_sum_parts(const float* parts, float* out, int M, int S,
                                        float scale) {
    for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < (unsigned)M;
         j += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < S; ++s) acc += parts[(size_t)s * M + j];
        out[j] = acc * scale;
    }
}
