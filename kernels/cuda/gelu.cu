// Exact (erf) GELU, forward and backward (src/kernels/gelu.rs), and GELU of x + b with b an
// f32 per-channel bias over the last dimension (ConvNeXt's fc1 bias and GELU,
// src/kernels/channels_last.rs): element-wise, one thread per element; the bias gradient is
// a column sum over slices of rows (block: 32 columns x 8 row lanes), slices added in order.

__device__ __forceinline__ float gelu_f(float v) {
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

__device__ __forceinline__ float gelu_grad_f(float v) {
    float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
    return cdf + v * pdf;
}

template <class T>
__device__ void gelu_fwd(const T* __restrict__ x, T* __restrict__ y, unsigned n) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        st(&y[i], gelu_f(ld(x[i])));
}

template <class T>
__device__ void gelu_bwd(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ gx,
                         unsigned n) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        st(&gx[i], ld(g[i]) * gelu_grad_f(ld(x[i])));
}

template <class T>
__device__ void bias_gelu_fwd(const T* __restrict__ x, const float* __restrict__ b,
                              T* __restrict__ y, unsigned n, int C) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        st(&y[i], gelu_f(ld(x[i]) + b[i % C]));
}

template <class T>
__device__ void bias_gelu_bwd(const T* __restrict__ x, const float* __restrict__ b,
                              const T* __restrict__ g, T* __restrict__ gx, unsigned n, int C) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        st(&gx[i], ld(g[i]) * gelu_grad_f(ld(x[i]) + b[i % C]));
}

// Block (32 columns, 8 row lanes) at (column group, slice s) of a (ceil(C/32), S) grid:
// parts[s * C + c] = sum over the rows of slice s of v[r, c].
template <class T>
__device__ void col_sum_parts(const T* __restrict__ v, float* __restrict__ parts, unsigned R,
                              int C) {
    __shared__ float sh[8][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    int s = blockIdx.y, S = gridDim.y;
    unsigned lo = (unsigned)((unsigned long long)R * s / S);
    unsigned hi = (unsigned)((unsigned long long)R * (s + 1) / S);
    float acc = 0.0f;
    if (c < C) {
        for (unsigned r = lo + threadIdx.y; r < hi; r += blockDim.y) acc += ld(v[(size_t)r * C + c]);
    }
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.0f;
        for (unsigned k = 0; k < blockDim.y; ++k) t += sh[k][threadIdx.x];
        parts[(size_t)s * C + c] = t;
    }
}

#define GELU_ENTRIES(S, T)                                                                     \
    extern "C" __global__ void gelu_fwd_##S(const T* x, T* y, unsigned n) {                    \
        gelu_fwd<T>(x, y, n);                                                                  \
    }                                                                                          \
    extern "C" __global__ void gelu_bwd_##S(const T* x, const T* g, T* gx, unsigned n) {       \
        gelu_bwd<T>(x, g, gx, n);                                                              \
    }                                                                                          \
    extern "C" __global__ void bias_gelu_fwd_##S(const T* x, const float* b, T* y, unsigned n, \
                                                 int C) {                                      \
        bias_gelu_fwd<T>(x, b, y, n, C);                                                       \
    }                                                                                          \
    extern "C" __global__ void bias_gelu_bwd_##S(const T* x, const float* b, const T* g,       \
                                                 T* gx, unsigned n, int C) {                   \
        bias_gelu_bwd<T>(x, b, g, gx, n, C);                                                   \
    }                                                                                          \
    extern "C" __global__ void col_sum_parts_##S(const T* v, float* parts, unsigned R, int C) { \
        col_sum_parts<T>(v, parts, R, C);                                                      \
    }

RUNNER_FOR_EACH_DTYPE(GELU_ENTRIES)

// out[c] = sum over s of parts[s * C + c], for c < C.
extern "C" __global__ void gelu_sum_parts(const float* parts, float* out, int C, int S) {
    for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < (unsigned)C;
         j += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < S; ++s) acc += parts[(size_t)s * C + j];
        out[j] = acc;
    }
}
