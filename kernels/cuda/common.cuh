// Shared by every kernel source in this folder: the loader (src/kernels/gpu.rs) puts it in
// front of each .cu before NVRTC compiles it; the CPU emulation (tests/cuda_emulated/) includes
// it after its shim. No CUDA header is needed: bf16 and f16 are plain 16-bit storage types
// with their own conversions (round to nearest even, as Candle's `half` crate converts), and
// every kernel computes in f32.
//
// Conventions: element counts are checked on the host to fit in 31 bits, so indices are
// 32-bit; block sizes are multiples of 32 (warps are whole); no kernel returns before a
// barrier or a shuffle; reductions add in a fixed order (no atomics), so that a GPU run gives
// the same bits every time.

struct bf16 {
    unsigned short bits;
};
struct f16 {
    unsigned short bits;
};

__device__ __forceinline__ float ld(float v) { return v; }

__device__ __forceinline__ float ld(bf16 v) { return __uint_as_float(((unsigned)v.bits) << 16); }

__device__ __forceinline__ float ld(f16 v) {
#ifdef RUNNER_EMULATED
    return emu_f16_to_f32(v.bits);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
#endif
}

__device__ __forceinline__ void st(float* p, float v) { *p = v; }

__device__ __forceinline__ void st(bf16* p, float v) {
    unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        p->bits = (unsigned short)((u >> 16) | 0x40u);  // NaN stays a (quiet) NaN
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    p->bits = (unsigned short)(u >> 16);
}

__device__ __forceinline__ void st(f16* p, float v) {
#ifdef RUNNER_EMULATED
    p->bits = emu_f32_to_f16(v);
#else
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->bits = h;
#endif
}

// The thread's index in its block, x fastest (warps are 32 consecutive indices).
__device__ __forceinline__ unsigned linear_tid() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

// The sum over the 32 lanes of a warp, in every lane (the butterfly gives every lane the
// same additions in the same order).
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

// The sum over the block, in every thread; `sh` holds at least one float per warp. Every
// thread must call it (it has barriers).
__device__ __forceinline__ float block_sum(float v, float* sh) {
    unsigned tid = linear_tid();
    unsigned nwarps = (blockDim.x * blockDim.y * blockDim.z) / 32;
    v = warp_sum(v);
    if ((tid & 31) == 0) {
        sh[tid >> 5] = v;
    }
    __syncthreads();
    float t = 0.0f;
    for (unsigned i = 0; i < nwarps; ++i) {
        t += sh[i];
    }
    __syncthreads();
    return t;
}

// Kernels are templates over the element type; each source instantiates them as
// `extern "C"` entry points named `<kernel>_f32`, `_bf16` and `_f16`.
#define RUNNER_FOR_EACH_DTYPE(M) M(f32, float) M(bf16, bf16) M(f16, f16)
