// 2-D max and average pooling of NCHW input, forward and backward, any kernel, stride and
// padding (src/kernels/pool.rs): PyTorch's floor mode; max-pool never picks padding, takes the
// first maximum of a window and propagates the first NaN; avg-pool counts the padding in the
// divisor (count_include_pad). One thread per output element forward; the backward gathers,
// one thread per input element, over the windows that hold it (recomputing each window's
// maximum), in the order the CPU kernel adds them.

struct PoolGeom {
    int H, W, KH, KW, SH, SW, PH, PW, OH, OW;
};

// The input window of output (oy, ox), clipped to the plane: [y0, y1) x [x0, x1).
__device__ __forceinline__ void pool_window(const PoolGeom& g, int oy, int ox, int& y0, int& y1,
                                            int& x0, int& x1) {
    int ys = oy * g.SH - g.PH, xs = ox * g.SW - g.PW;
    y0 = ys < 0 ? 0 : ys;
    x0 = xs < 0 ? 0 : xs;
    y1 = ys + g.KH < g.H ? ys + g.KH : g.H;
    x1 = xs + g.KW < g.W ? xs + g.KW : g.W;
}

// Index in the plane of the window's first maximum (the first NaN if it holds one); -1 for an
// empty window.
template <class T>
__device__ int window_argmax(const T* plane, const PoolGeom& g, int oy, int ox) {
    int y0, y1, x0, x1;
    pool_window(g, oy, ox, y0, y1, x0, x1);
    if (y0 >= y1 || x0 >= x1) return -1;
    int best = y0 * g.W + x0;
    float best_v = ld(plane[best]);
    int nan_at = -1;
    for (int y = y0; y < y1; ++y) {
        for (int x = x0; x < x1; ++x) {
            float v = ld(plane[y * g.W + x]);
            if (v != v) {
                if (nan_at < 0) nan_at = y * g.W + x;
            } else if (v > best_v) {
                best = y * g.W + x;
                best_v = v;
            }
        }
    }
    return nan_at >= 0 ? nan_at : best;
}

// Range of outputs along one axis whose windows hold input coordinate i: [lo, hi].
__device__ __forceinline__ void covering(int i, int K, int S, int P, int O, int& lo, int& hi) {
    int top = i + P;  // window o starts at o * S - P: holds i when o*S <= i + P < o*S + K
    lo = top - K + 1 <= 0 ? 0 : (top - K + 1 + S - 1) / S;
    hi = top / S;
    if (hi > O - 1) hi = O - 1;
}

template <class T>
__device__ void max_pool_fwd(const T* __restrict__ x, T* __restrict__ y, unsigned planes,
                             PoolGeom g) {
    unsigned total = planes * g.OH * g.OW;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int ox = i % g.OW;
        unsigned t = i / g.OW;
        int oy = t % g.OH;
        unsigned p = t / g.OH;
        const T* plane = x + (size_t)p * g.H * g.W;
        int a = window_argmax(plane, g, oy, ox);
        st(&y[i], a < 0 ? -__int_as_float(0x7f800000) : ld(plane[a]));
    }
}

template <class T>
__device__ void max_pool_bwd(const T* __restrict__ x, const T* __restrict__ gy,
                             T* __restrict__ gx, unsigned planes, PoolGeom g) {
    unsigned total = planes * g.H * g.W;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int ix = i % g.W;
        unsigned t = i / g.W;
        int iy = t % g.H;
        unsigned p = t / g.H;
        const T* plane = x + (size_t)p * g.H * g.W;
        const T* gp = gy + (size_t)p * g.OH * g.OW;
        int me = iy * g.W + ix;
        int oy0, oy1, ox0, ox1;
        covering(iy, g.KH, g.SH, g.PH, g.OH, oy0, oy1);
        covering(ix, g.KW, g.SW, g.PW, g.OW, ox0, ox1);
        float acc = 0.0f;
        for (int oy = oy0; oy <= oy1; ++oy) {
            for (int ox = ox0; ox <= ox1; ++ox) {
                if (window_argmax(plane, g, oy, ox) == me) acc += ld(gp[oy * g.OW + ox]);
            }
        }
        st(&gx[i], acc);
    }
}

template <class T>
__device__ void avg_pool_fwd(const T* __restrict__ x, T* __restrict__ y, unsigned planes,
                             PoolGeom g) {
    unsigned total = planes * g.OH * g.OW;
    float div = 1.0f / (float)(g.KH * g.KW);
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int ox = i % g.OW;
        unsigned t = i / g.OW;
        int oy = t % g.OH;
        unsigned p = t / g.OH;
        const T* plane = x + (size_t)p * g.H * g.W;
        int y0, y1, x0, x1;
        pool_window(g, oy, ox, y0, y1, x0, x1);
        float s = 0.0f;
        for (int yy = y0; yy < y1; ++yy) {
            float row = 0.0f;
            for (int xx = x0; xx < x1; ++xx) row += ld(plane[yy * g.W + xx]);
            s += row;
        }
        st(&y[i], s * div);
    }
}

template <class T>
__device__ void avg_pool_bwd(const T* __restrict__ gy, T* __restrict__ gx, unsigned planes,
                             PoolGeom g) {
    unsigned total = planes * g.H * g.W;
    float div = 1.0f / (float)(g.KH * g.KW);
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int ix = i % g.W;
        unsigned t = i / g.W;
        int iy = t % g.H;
        unsigned p = t / g.H;
        const T* gp = gy + (size_t)p * g.OH * g.OW;
        int oy0, oy1, ox0, ox1;
        covering(iy, g.KH, g.SH, g.PH, g.OH, oy0, oy1);
        covering(ix, g.KW, g.SW, g.PW, g.OW, ox0, ox1);
        float acc = 0.0f;
        for (int oy = oy0; oy <= oy1; ++oy) {
            for (int ox = ox0; ox <= ox1; ++ox) acc += ld(gp[oy * g.OW + ox]) * div;
        }
        st(&gx[i], acc);
    }
}

#define POOL_GEOM int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW
#define POOL_G PoolGeom{H, W, KH, KW, SH, SW, PH, PW, OH, OW}
#define POOL_ENTRIES(S, T)                                                                     \
    extern "C" __global__ void max_pool_fwd_##S(const T* x, T* y, unsigned planes,             \
                                                POOL_GEOM) {                                   \
        max_pool_fwd<T>(x, y, planes, POOL_G);                                                 \
    }                                                                                          \
    extern "C" __global__ void max_pool_bwd_##S(const T* x, const T* gy, T* gx,                \
                                                unsigned planes, POOL_GEOM) {                  \
        max_pool_bwd<T>(x, gy, gx, planes, POOL_G);                                            \
    }                                                                                          \
    extern "C" __global__ void avg_pool_fwd_##S(const T* x, T* y, unsigned planes,             \
                                                POOL_GEOM) {                                   \
        avg_pool_fwd<T>(x, y, planes, POOL_G);                                                 \
    }                                                                                          \
    extern "C" __global__ void avg_pool_bwd_##S(const T* gy, T* gx, unsigned planes,           \
                                                POOL_GEOM) {                                   \
        avg_pool_bwd<T>(gy, gx, planes, POOL_G);                                               \
    }

RUNNER_FOR_EACH_DTYPE(POOL_ENTRIES)
