// Dense convolution on the GPU as im2col + a cuBLAS matrix product (src/kernels/im2col.rs):
// `im2col` lays the windows of NCHW x out as rows, cols (N*OH*OW, C*KH*KW), so that
// y = cols @ w^T; its backward `col2im` adds the column gradients back onto the input, one
// thread per input element gathering the windows that hold it (no atomics).

template <class T>
__device__ void im2col(const T* __restrict__ x, T* __restrict__ cols, int N, int C, int H, int W,
                       int KH, int KW, int S, int P, int OH, int OW) {
    unsigned kk = (unsigned)C * KH * KW;
    unsigned total = (unsigned)N * OH * OW * kk;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        unsigned col = i % kk, row = i / kk;
        int kx = col % KW;
        unsigned t = col / KW;
        int ky = t % KH;
        int c = t / KH;
        int ox = row % OW;
        t = row / OW;
        int oy = t % OH;
        unsigned n = t / OH;
        int iy = oy * S - P + ky, ix = ox * S - P + kx;
        float v = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = ld(x[(((size_t)n * C + c) * H + iy) * W + ix]);
        st(&cols[i], v);
    }
}

template <class T>
__device__ void col2im(const T* __restrict__ cols, T* __restrict__ gx, int N, int C, int H,
                       int W, int KH, int KW, int S, int P, int OH, int OW) {
    unsigned kk = (unsigned)C * KH * KW;
    unsigned total = (unsigned)N * C * H * W;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int ix = i % W;
        unsigned t = i / W;
        int iy = t % H;
        t /= H;
        int c = t % C;
        unsigned n = t / C;
        float acc = 0.0f;
        for (int ky = 0; ky < KH; ++ky) {
            int ty = iy + P - ky;
            if (ty < 0 || ty % S != 0) continue;
            int oy = ty / S;
            if (oy >= OH) continue;
            for (int kx = 0; kx < KW; ++kx) {
                int tx = ix + P - kx;
                if (tx < 0 || tx % S != 0) continue;
                int ox = tx / S;
                if (ox >= OW) continue;
                size_t row = ((size_t)n * OH + oy) * OW + ox;
                acc += ld(cols[row * kk + ((unsigned)c * KH + ky) * KW + kx]);
            }
        }
        st(&gx[i], acc);
    }
}

#define IM2COL_GEOM int N, int C, int H, int W, int KH, int KW, int S_, int P, int OH, int OW
#define IM2COL_ARGS N, C, H, W, KH, KW, S_, P, OH, OW
#define IM2COL_ENTRIES(S, T)                                                                   \
    extern "C" __global__ void im2col_##S(const T* x, T* cols, IM2COL_GEOM) {                 \
        im2col<T>(x, cols, IM2COL_ARGS);                                                       \
    }                                                                                          \
    extern "C" __global__ void col2im_##S(const T* cols, T* gx, IM2COL_GEOM) {                \
        col2im<T>(cols, gx, IM2COL_ARGS);                                                      \
    }

RUNNER_FOR_EACH_DTYPE(IM2COL_ENTRIES)
