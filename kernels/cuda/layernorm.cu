// LayerNorm with f32 affine parameters and f32 statistics (src/kernels/layernorm.rs), over
// the last dimension of (R, C) rows ("last", ConvNeXt's blocks, channels-last) and over the
// channels of NCHW input ("chan", timm's LayerNorm2d in the stem and downsampling layers).
//
// last: one warp per row, two-pass mean and variance; the backward writes the input gradient
// and each row's (mean, rstd), then `ln_params_parts` sums g * xhat and g per column over
// slices of rows (block: 32 columns x 8 row lanes) and `ln_sum_parts` adds the slices in order.
// chan: one thread per (image, position), looping over the channels; the parameter gradients
// are one block per (channel, slice of positions).

template <class T>
__device__ void ln_fwd(const T* __restrict__ x, const float* __restrict__ w,
                       const float* __restrict__ b, T* __restrict__ y, unsigned R, int C,
                       float eps) {
    unsigned lane = threadIdx.x & 31;
    unsigned warps = (blockDim.x / 32) * gridDim.x;
    for (unsigned r = (blockIdx.x * blockDim.x + threadIdx.x) / 32; r < R; r += warps) {
        const T* xr = x + (size_t)r * C;
        float s = 0.0f;
        for (int j = lane; j < C; j += 32) s += ld(xr[j]);
        float mean = warp_sum(s) / C;
        float v = 0.0f;
        for (int j = lane; j < C; j += 32) {
            float d = ld(xr[j]) - mean;
            v += d * d;
        }
        float rstd = rsqrtf(warp_sum(v) / C + eps);
        T* yr = y + (size_t)r * C;
        for (int j = lane; j < C; j += 32) st(&yr[j], (ld(xr[j]) - mean) * rstd * w[j] + b[j]);
    }
}

template <class T>
__device__ void ln_bwd(const T* __restrict__ x, const float* __restrict__ w,
                       const T* __restrict__ g, T* __restrict__ gx, float* __restrict__ stats,
                       unsigned R, int C, float eps) {
    unsigned lane = threadIdx.x & 31;
    unsigned warps = (blockDim.x / 32) * gridDim.x;
    for (unsigned r = (blockIdx.x * blockDim.x + threadIdx.x) / 32; r < R; r += warps) {
        const T* xr = x + (size_t)r * C;
        const T* gr = g + (size_t)r * C;
        float s = 0.0f;
        for (int j = lane; j < C; j += 32) s += ld(xr[j]);
        float mean = warp_sum(s) / C;
        float v = 0.0f;
        for (int j = lane; j < C; j += 32) {
            float d = ld(xr[j]) - mean;
            v += d * d;
        }
        float rstd = rsqrtf(warp_sum(v) / C + eps);
        float m1 = 0.0f, m2 = 0.0f;
        for (int j = lane; j < C; j += 32) {
            float gh = ld(gr[j]) * w[j];
            m1 += gh;
            m2 += gh * (ld(xr[j]) - mean) * rstd;
        }
        m1 = warp_sum(m1) / C;
        m2 = warp_sum(m2) / C;
        T* o = gx + (size_t)r * C;
        for (int j = lane; j < C; j += 32) {
            float xhat = (ld(xr[j]) - mean) * rstd;
            st(&o[j], rstd * (ld(gr[j]) * w[j] - m1 - xhat * m2));
        }
        if (lane == 0) {
            stats[2 * (size_t)r] = mean;
            stats[2 * (size_t)r + 1] = rstd;
        }
    }
}

// Block (32 columns, 8 row lanes) at (column group, slice s): parts[(s * 2 + k) * C + c] with
// k = 0: sum of g * xhat (weight), k = 1: sum of g (bias), over the rows of slice s.
template <class T>
__device__ void ln_params_parts(const T* __restrict__ x, const T* __restrict__ g,
                                const float* __restrict__ stats, float* __restrict__ parts,
                                unsigned R, int C) {
    __shared__ float sw[8][32];
    __shared__ float sb[8][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    int s = blockIdx.y, S = gridDim.y;
    unsigned lo = (unsigned)((unsigned long long)R * s / S);
    unsigned hi = (unsigned)((unsigned long long)R * (s + 1) / S);
    float aw = 0.0f, ab = 0.0f;
    if (c < C) {
        for (unsigned r = lo + threadIdx.y; r < hi; r += blockDim.y) {
            float gv = ld(g[(size_t)r * C + c]);
            float xhat = (ld(x[(size_t)r * C + c]) - stats[2 * (size_t)r]) * stats[2 * (size_t)r + 1];
            aw += gv * xhat;
            ab += gv;
        }
    }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float tw = 0.0f, tb = 0.0f;
        for (unsigned k = 0; k < blockDim.y; ++k) {
            tw += sw[k][threadIdx.x];
            tb += sb[k][threadIdx.x];
        }
        parts[((size_t)s * 2) * C + c] = tw;
        parts[((size_t)s * 2 + 1) * C + c] = tb;
    }
}

// out[j] = sum over s of parts[s * M + j] (f32), for j < M.
__device__ void ln_sum_parts_f32(const float* __restrict__ parts, float* __restrict__ out, int M,
                                 int S) {
    for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < (unsigned)M;
         j += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < S; ++s) acc += parts[(size_t)s * M + j];
        out[j] = acc;
    }
}

// ---- over the channels of NCHW: x (N, C, HW) ----

template <class T>
__device__ void lnc_fwd(const T* __restrict__ x, const float* __restrict__ w,
                        const float* __restrict__ b, T* __restrict__ y, int N, int C, int HW,
                        float eps) {
    unsigned total = (unsigned)N * HW;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        unsigned n = i / HW, q = i % HW;
        const T* xp = x + (size_t)n * C * HW + q;
        float s = 0.0f;
        for (int c = 0; c < C; ++c) s += ld(xp[(size_t)c * HW]);
        float mean = s / C;
        float v = 0.0f;
        for (int c = 0; c < C; ++c) {
            float d = ld(xp[(size_t)c * HW]) - mean;
            v += d * d;
        }
        float rstd = rsqrtf(v / C + eps);
        T* yp = y + (size_t)n * C * HW + q;
        for (int c = 0; c < C; ++c)
            st(&yp[(size_t)c * HW], (ld(xp[(size_t)c * HW]) - mean) * rstd * w[c] + b[c]);
    }
}

template <class T>
__device__ void lnc_bwd(const T* __restrict__ x, const float* __restrict__ w,
                        const T* __restrict__ g, T* __restrict__ gx, float* __restrict__ stats,
                        int N, int C, int HW, float eps) {
    unsigned total = (unsigned)N * HW;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        unsigned n = i / HW, q = i % HW;
        size_t base = (size_t)n * C * HW + q;
        const T* xp = x + base;
        const T* gp = g + base;
        float s = 0.0f;
        for (int c = 0; c < C; ++c) s += ld(xp[(size_t)c * HW]);
        float mean = s / C;
        float v = 0.0f;
        for (int c = 0; c < C; ++c) {
            float d = ld(xp[(size_t)c * HW]) - mean;
            v += d * d;
        }
        float rstd = rsqrtf(v / C + eps);
        float m1 = 0.0f, m2 = 0.0f;
        for (int c = 0; c < C; ++c) {
            float gh = ld(gp[(size_t)c * HW]) * w[c];
            m1 += gh;
            m2 += gh * (ld(xp[(size_t)c * HW]) - mean) * rstd;
        }
        m1 /= C;
        m2 /= C;
        T* o = gx + base;
        for (int c = 0; c < C; ++c) {
            float xhat = (ld(xp[(size_t)c * HW]) - mean) * rstd;
            st(&o[(size_t)c * HW], rstd * (ld(gp[(size_t)c * HW]) * w[c] - m1 - xhat * m2));
        }
        stats[2 * (size_t)i] = mean;
        stats[2 * (size_t)i + 1] = rstd;
    }
}

// Block (c, s) of a (C, S) grid: parts[(s * 2 + k) * C + c], k = 0: sum of g * xhat, k = 1:
// sum of g, over slice s of the N * HW positions.
template <class T>
__device__ void lnc_params_parts(const T* __restrict__ x, const T* __restrict__ g,
                                 const float* __restrict__ stats, float* __restrict__ parts,
                                 int N, int C, int HW) {
    __shared__ float sh[32];
    int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    unsigned total = (unsigned)N * HW;
    unsigned lo = (unsigned)((unsigned long long)total * s / S);
    unsigned hi = (unsigned)((unsigned long long)total * (s + 1) / S);
    float aw = 0.0f, ab = 0.0f;
    for (unsigned i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        unsigned n = i / HW, q = i % HW;
        size_t at = ((size_t)n * C + c) * HW + q;
        float gv = ld(g[at]);
        aw += gv * (ld(x[at]) - stats[2 * (size_t)i]) * stats[2 * (size_t)i + 1];
        ab += gv;
    }
    float tw = block_sum(aw, sh);
    float tb = block_sum(ab, sh);
    if (threadIdx.x == 0) {
        parts[((size_t)s * 2) * C + c] = tw;
        parts[((size_t)s * 2 + 1) * C + c] = tb;
    }
}

#define LN_ENTRIES(S, T)                                                                       \
    extern "C" __global__ void ln_fwd_##S(const T* x, const float* w, const float* b, T* y,    \
                                          unsigned R, int C, float eps) {                      \
        ln_fwd<T>(x, w, b, y, R, C, eps);                                                      \
    }                                                                                          \
    extern "C" __global__ void ln_bwd_##S(const T* x, const float* w, const T* g, T* gx,       \
                                          float* stats, unsigned R, int C, float eps) {        \
        ln_bwd<T>(x, w, g, gx, stats, R, C, eps);                                              \
    }                                                                                          \
    extern "C" __global__ void ln_params_parts_##S(const T* x, const T* g, const float* stats, \
                                                   float* parts, unsigned R, int C) {          \
        ln_params_parts<T>(x, g, stats, parts, R, C);                                          \
    }                                                                                          \
    extern "C" __global__ void lnc_fwd_##S(const T* x, const float* w, const float* b, T* y,   \
                                           int N, int C, int HW, float eps) {                  \
        lnc_fwd<T>(x, w, b, y, N, C, HW, eps);                                                 \
    }                                                                                          \
    extern "C" __global__ void lnc_bwd_##S(const T* x, const float* w, const T* g, T* gx,      \
                                           float* stats, int N, int C, int HW, float eps) {    \
        lnc_bwd<T>(x, w, g, gx, stats, N, C, HW, eps);                                         \
    }                                                                                          \
    extern "C" __global__ void lnc_params_parts_##S(const T* x, const T* g,                    \
                                                    const float* stats, float* parts, int N,   \
                                                    int C, int HW) {                           \
        lnc_params_parts<T>(x, g, stats, parts, N, C, HW);                                     \
    }

RUNNER_FOR_EACH_DTYPE(LN_ENTRIES)

extern "C" __global__ void ln_sum_parts(const float* parts, float* out, int M, int S) {
    ln_sum_parts_f32(parts, out, M, S);
}
