// Optimizer updates on f32 master weights (src/train/optim/fused.rs), one
// kernel launch per parameter tensor, one thread per element: PyTorch's SGD (momentum,
// dampening, Nesterov, weight decay) and AdamW. Each performs the CPU kernels' f32 operations
// in the same order (src/train/optim/fused.rs); this module is compiled without FMA
// contraction, so a step gives the CPU's bits from the same inputs.

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
