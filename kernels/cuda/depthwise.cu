// Depthwise 2-D convolution (groups == channels), forward and backward, for NCHW input
// (src/kernels/depthwise.rs) and for channels-last input with bias, stride 1 and "same"
// padding (src/kernels/depthwise_nhwc.rs). Weights are PyTorch's (C, 1, KH, KW).
//
// Forward and input gradient: one thread per output element, gathering over the taps (the
// input gradient gathers the output positions whose windows hold the element, so no two
// threads write one element). Weight (and bias) gradient: partial sums over slices of the
// positions, one block per (channel or channel group, slice), reduced in the block, then
// added over the slices in order by `*_sum_parts`.

// ---- NCHW ----

template <class T>
__device__ void dw_fwd(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                       int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                       int OH, int OW) {
    unsigned total = (unsigned)N * C * OH * OW;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int ox = i % OW;
        unsigned t = i / OW;
        int oy = t % OH;
        t /= OH;  // plane n * C + c
        int c = t % C;
        const T* xp = x + (size_t)t * H * W;
        const T* wp = w + c * KH * KW;
        int iy0 = oy * SH - PH, ix0 = ox * SW - PW;
        float acc = 0.0f;
        for (int ky = 0; ky < KH; ++ky) {
            int iy = iy0 + ky;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < KW; ++kx) {
                int ix = ix0 + kx;
                if (ix < 0 || ix >= W) continue;
                acc += ld(xp[iy * W + ix]) * ld(wp[ky * KW + kx]);
            }
        }
        st(&y[i], acc);
    }
}

template <class T>
__device__ void dw_bwd_input(const T* __restrict__ gy, const T* __restrict__ w,
                             T* __restrict__ gx, int N, int C, int H, int W, int KH, int KW,
                             int SH, int SW, int PH, int PW, int OH, int OW) {
    unsigned total = (unsigned)N * C * H * W;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int ix = i % W;
        unsigned t = i / W;
        int iy = t % H;
        t /= H;
        int c = t % C;
        const T* gp = gy + (size_t)t * OH * OW;
        const T* wp = w + c * KH * KW;
        float acc = 0.0f;
        for (int ky = 0; ky < KH; ++ky) {
            int ty = iy + PH - ky;
            if (ty < 0 || ty % SH != 0) continue;
            int oy = ty / SH;
            if (oy >= OH) continue;
            for (int kx = 0; kx < KW; ++kx) {
                int tx = ix + PW - kx;
                if (tx < 0 || tx % SW != 0) continue;
                int ox = tx / SW;
                if (ox >= OW) continue;
                acc += ld(gp[oy * OW + ox]) * ld(wp[ky * KW + kx]);
            }
        }
        st(&gx[i], acc);
    }
}

// Block (c, s) of a (C, S) grid: for every tap, the sum over the positions of slice s of
// gy * x, into parts[(s * C + c) * KH * KW + tap] (f32).
template <class T>
__device__ void dw_wgrad_parts(const T* __restrict__ x, const T* __restrict__ gy,
                               float* __restrict__ parts, int N, int C, int H, int W, int KH,
                               int KW, int SH, int SW, int PH, int PW, int OH, int OW) {
    __shared__ float sh[32];
    int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    unsigned per_image = (unsigned)OH * OW;
    unsigned total = (unsigned)N * per_image;
    unsigned lo = (unsigned)((unsigned long long)total * s / S);
    unsigned hi = (unsigned)((unsigned long long)total * (s + 1) / S);
    for (int ky = 0; ky < KH; ++ky) {
        for (int kx = 0; kx < KW; ++kx) {
            float acc = 0.0f;
            for (unsigned p = lo + threadIdx.x; p < hi; p += blockDim.x) {
                unsigned n = p / per_image, q = p % per_image;
                int oy = q / OW, ox = q % OW;
                int iy = oy * SH - PH + ky, ix = ox * SW - PW + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                size_t plane = (size_t)n * C + c;
                acc += ld(gy[plane * per_image + q]) * ld(x[plane * H * W + iy * W + ix]);
            }
            float total_tap = block_sum(acc, sh);
            if (threadIdx.x == 0) {
                parts[((size_t)s * C + c) * KH * KW + ky * KW + kx] = total_tap;
            }
        }
    }
}

// out[j] = sum over s of parts[s * M + j], s in order, for j < M.
template <class T>
__device__ void dw_sum_parts(const float* __restrict__ parts, T* __restrict__ out, int M, int S) {
    for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < (unsigned)M;
         j += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < S; ++s) acc += parts[(size_t)s * M + j];
        st(&out[j], acc);
    }
}

// ---- channels-last (N, H, W, C), stride 1, padding (KH / 2, KW / 2), with bias ----

template <class T>
__device__ void dwl_fwd(const T* __restrict__ x, const T* __restrict__ w,
                        const T* __restrict__ b, T* __restrict__ y, int N, int H, int W, int C,
                        int KH, int KW) {
    unsigned total = (unsigned)N * H * W * C;
    int PH = KH / 2, PW = KW / 2;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int c = i % C;
        unsigned t = i / C;
        int ox = t % W;
        t /= W;
        int oy = t % H;
        unsigned n = t / H;
        const T* xi = x + (size_t)n * H * W * C;
        const T* wp = w + c * KH * KW;
        float acc = ld(b[c]);
        for (int ky = 0; ky < KH; ++ky) {
            int iy = oy + ky - PH;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < KW; ++kx) {
                int ix = ox + kx - PW;
                if (ix < 0 || ix >= W) continue;
                acc += ld(xi[((size_t)iy * W + ix) * C + c]) * ld(wp[ky * KW + kx]);
            }
        }
        st(&y[i], acc);
    }
}

template <class T>
__device__ void dwl_bwd_input(const T* __restrict__ gy, const T* __restrict__ w,
                              T* __restrict__ gx, int N, int H, int W, int C, int KH, int KW) {
    unsigned total = (unsigned)N * H * W * C;
    int PH = KH / 2, PW = KW / 2;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int c = i % C;
        unsigned t = i / C;
        int ix = t % W;
        t /= W;
        int iy = t % H;
        unsigned n = t / H;
        const T* gi = gy + (size_t)n * H * W * C;
        const T* wp = w + c * KH * KW;
        float acc = 0.0f;
        for (int ky = 0; ky < KH; ++ky) {
            int oy = iy + PH - ky;
            if (oy < 0 || oy >= H) continue;
            for (int kx = 0; kx < KW; ++kx) {
                int ox = ix + PW - kx;
                if (ox < 0 || ox >= W) continue;
                acc += ld(gi[((size_t)oy * W + ox) * C + c]) * ld(wp[ky * KW + kx]);
            }
        }
        st(&gx[i], acc);
    }
}

// Block (32 channels, 8 position lanes) at (channel group g, slice s) of a (ceil(C/32), S)
// grid: for every tap and the bias, the sum over the positions of slice s, into
// parts[(s * (KH*KW + 1) + tap) * C + c] (tap KH*KW is the bias).
template <class T>
__device__ void dwl_wgrad_parts(const T* __restrict__ x, const T* __restrict__ gy,
                                float* __restrict__ parts, int N, int H, int W, int C, int KH,
                                int KW) {
    __shared__ float sh[8][32];
    int PH = KH / 2, PW = KW / 2;
    int c = blockIdx.x * 32 + threadIdx.x;
    int s = blockIdx.y, S = gridDim.y;
    unsigned per_image = (unsigned)H * W;
    unsigned total = (unsigned)N * per_image;
    unsigned lo = (unsigned)((unsigned long long)total * s / S);
    unsigned hi = (unsigned)((unsigned long long)total * (s + 1) / S);
    int taps = KH * KW;
    for (int tap = 0; tap <= taps; ++tap) {
        int ky = tap / KW, kx = tap % KW;
        float acc = 0.0f;
        if (c < C) {
            for (unsigned p = lo + threadIdx.y; p < hi; p += blockDim.y) {
                float g = ld(gy[(size_t)p * C + c]);
                if (tap == taps) {
                    acc += g;
                    continue;
                }
                unsigned n = p / per_image, q = p % per_image;
                int oy = q / W, ox = q % W;
                int iy = oy + ky - PH, ix = ox + kx - PW;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += g * ld(x[(((size_t)n * H + iy) * W + ix) * C + c]);
            }
        }
        sh[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            float t = 0.0f;
            for (unsigned r = 0; r < blockDim.y; ++r) t += sh[r][threadIdx.x];
            parts[((size_t)s * (taps + 1) + tap) * C + c] = t;
        }
        __syncthreads();
    }
}

// out = [gw (C, 1, KH, KW) | gb (C)] from the parts of dwl_wgrad_parts, slices in order.
template <class T>
__device__ void dwl_sum_parts(const float* __restrict__ parts, T* __restrict__ out, int C,
                              int taps, int S) {
    unsigned m = (unsigned)C * (taps + 1);
    for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < m;
         j += gridDim.x * blockDim.x) {
        int c, tap;
        if (j < (unsigned)C * taps) {
            c = j / taps;
            tap = j % taps;
        } else {
            c = j - C * taps;
            tap = taps;
        }
        float acc = 0.0f;
        for (int s = 0; s < S; ++s) acc += parts[((size_t)s * (taps + 1) + tap) * C + c];
        st(&out[j], acc);
    }
}

#define DW_GEOM int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW
#define DW_ARGS N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW
#define DW_ENTRIES(S, T)                                                                       \
    extern "C" __global__ void dw_fwd_##S(const T* x, const T* w, T* y, DW_GEOM) {             \
        dw_fwd<T>(x, w, y, DW_ARGS);                                                           \
    }                                                                                          \
    extern "C" __global__ void dw_bwd_input_##S(const T* gy, const T* w, T* gx, DW_GEOM) {     \
        dw_bwd_input<T>(gy, w, gx, DW_ARGS);                                                   \
    }                                                                                          \
    extern "C" __global__ void dw_wgrad_parts_##S(const T* x, const T* gy, float* parts,       \
                                                  DW_GEOM) {                                   \
        dw_wgrad_parts<T>(x, gy, parts, DW_ARGS);                                              \
    }                                                                                          \
    extern "C" __global__ void dw_sum_parts_##S(const float* parts, T* out, int M, int S_) {   \
        dw_sum_parts<T>(parts, out, M, S_);                                                    \
    }                                                                                          \
    extern "C" __global__ void dwl_fwd_##S(const T* x, const T* w, const T* b, T* y, int N,    \
                                           int H, int W, int C, int KH, int KW) {              \
        dwl_fwd<T>(x, w, b, y, N, H, W, C, KH, KW);                                            \
    }                                                                                          \
    extern "C" __global__ void dwl_bwd_input_##S(const T* gy, const T* w, T* gx, int N, int H, \
                                                 int W, int C, int KH, int KW) {               \
        dwl_bwd_input<T>(gy, w, gx, N, H, W, C, KH, KW);                                       \
    }                                                                                          \
    extern "C" __global__ void dwl_wgrad_parts_##S(const T* x, const T* gy, float* parts,      \
                                                   int N, int H, int W, int C, int KH,         \
                                                   int KW) {                                   \
        dwl_wgrad_parts<T>(x, gy, parts, N, H, W, C, KH, KW);                                  \
    }                                                                                          \
    extern "C" __global__ void dwl_sum_parts_##S(const float* parts, T* out, int C, int taps,  \
                                                 int S_) {                                     \
        dwl_sum_parts<T>(parts, out, C, taps, S_);                                             \
    }

RUNNER_FOR_EACH_DTYPE(DW_ENTRIES)
