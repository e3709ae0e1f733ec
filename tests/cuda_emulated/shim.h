// CUDA on the CPU, for tests/cuda_emulated.rs: enough of CUDA C++ to compile the project's
// kernel sources (kernels/cuda/*.cu) with a C++ compiler and run their grids on the CPU, with
// the GPU's semantics for what the kernels use:
//
// - a block's threads are fibers (ucontext) on the calling OS thread, run one after the other
//   until each finishes or waits at a barrier; `__syncthreads` releases when every thread of
//   the block waits there, `__shfl_xor_sync` when every lane of the warp (32 consecutive
//   linear thread indices) has deposited its value. A barrier some threads can no longer reach
//   (they returned, or wait elsewhere) is reported as an error, where a GPU would hang or be
//   undefined;
// - `__shared__` variables are per-OS-thread statics, shared by the fibers of a block;
// - blocks run one after the other, in grid order;
// - f16 conversions are done in software (the GPU uses PTX cvt; both round to nearest even).
//
// Each kernel `k` gets an entry point `emu_k(grid, block, params, err, errlen)` taking its
// parameters as cuLaunchKernel does (an array of pointers to the values); EMU(k) defines it.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

#define RUNNER_EMULATED 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static thread_local

struct dim3 {
    unsigned x, y, z;
};

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float __int_as_float(int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }

// IEEE binary16 <-> binary32, round to nearest even (what PTX cvt.rn.f16.f32 does).
inline float emu_f16_to_f32(unsigned short h) {
    unsigned sign = ((unsigned)h & 0x8000u) << 16;
    unsigned exp = ((unsigned)h >> 10) & 0x1fu;
    unsigned man = (unsigned)h & 0x3ffu;
    if (exp == 0) {
        float f = std::ldexp((float)man, -24);
        return sign ? -f : f;
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

inline unsigned short emu_f32_to_f16(float f) {
    unsigned x = __float_as_uint(f);
    unsigned sign = (x >> 16) & 0x8000u;
    unsigned exp = (x >> 23) & 0xffu;
    unsigned man = x & 0x7fffffu;
    if (exp == 0xff) {
        if (man) return (unsigned short)(sign | 0x7e00u | (man >> 13));  // quiet NaN
        return (unsigned short)(sign | 0x7c00u);
    }
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (unsigned short)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (unsigned short)sign;
        man |= 0x800000u;
        unsigned shift = (unsigned)(14 - e);
        unsigned half_man = man >> shift;
        unsigned round = 1u << (shift - 1);
        unsigned rest = man & ((1u << shift) - 1u);
        if (rest > round || (rest == round && (half_man & 1u))) ++half_man;
        return (unsigned short)(sign | half_man);
    }
    unsigned out = sign | ((unsigned)e << 10) | (man >> 13);
    unsigned rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (out & 1u))) ++out;  // a carry rounds up to inf
    return (unsigned short)out;
}

namespace emu {

enum State { RUN, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
    ucontext_t ctx;
    dim3 tid;
    State state;
    float shfl;
};

struct Block {
    dim3 bidx, bdim, gdim;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    ucontext_t sched;
    Fiber* cur;
    void (*entry)(void*);
    void* arg;
};

inline thread_local Block* blk = nullptr;

constexpr size_t STACK = 64 * 1024;

inline void trampoline() {
    Block* b = blk;
    b->entry(b->arg);
    b->cur->state = DONE;  // uc_link returns to the scheduler
}

inline void wait(State s) {
    Fiber* me = blk->cur;
    me->state = s;
    swapcontext(&me->ctx, &blk->sched);
}

// Runs one block to completion; returns an error message or nullptr.
inline const char* run_block(Block& b) {
    size_t n = b.fibers.size();
    for (size_t i = 0; i < n; ++i) {
        Fiber& f = b.fibers[i];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = b.stacks.data() + i * STACK;
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = &b.sched;
        makecontext(&f.ctx, trampoline, 0);
        f.tid = dim3{(unsigned)(i % b.bdim.x), (unsigned)((i / b.bdim.x) % b.bdim.y),
                     (unsigned)(i / (b.bdim.x * b.bdim.y))};
        f.state = RUN;
    }
    for (;;) {
        for (size_t i = 0; i < n; ++i) {
            if (b.fibers[i].state != RUN) continue;
            b.cur = &b.fibers[i];
            swapcontext(&b.sched, &b.fibers[i].ctx);
        }
        size_t done = 0, at_block = 0;
        bool released = false;
        for (size_t w = 0; w * 32 < n; ++w) {
            size_t lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
            size_t waiting = 0, exited = 0;
            for (size_t i = lo; i < hi; ++i) {
                waiting += b.fibers[i].state == WAIT_WARP;
                exited += b.fibers[i].state == DONE;
            }
            if (waiting > 0 && waiting + exited == hi - lo) {
                if (exited > 0 || hi - lo != 32) return "a warp shuffle without all 32 lanes";
                for (size_t i = lo; i < hi; ++i) b.fibers[i].state = RUN;
                released = true;
            }
        }
        if (released) continue;
        for (size_t i = 0; i < n; ++i) {
            done += b.fibers[i].state == DONE;
            at_block += b.fibers[i].state == WAIT_BLOCK;
        }
        if (done == n) return nullptr;
        if (at_block > 0 && at_block + done == n) {
            if (done > 0) return "__syncthreads after some threads of the block returned";
            for (size_t i = 0; i < n; ++i) b.fibers[i].state = RUN;
            continue;
        }
        return "threads wait at different barriers (deadlock on a GPU)";
    }
}

template <class... A, size_t... I>
void call(void (*k)(A...), void** p, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}

template <class... A>
struct Call {
    void (*k)(A...);
    void** params;
    static void run(void* self) {
        Call* c = static_cast<Call*>(self);
        call(c->k, c->params, std::index_sequence_for<A...>{});
    }
};

template <class... A>
int launch(void (*k)(A...), const unsigned* grid, const unsigned* block, void** params, char* err,
           size_t errlen) {
    dim3 g{grid[0], grid[1], grid[2]}, bd{block[0], block[1], block[2]};
    size_t threads = (size_t)bd.x * bd.y * bd.z;
    if (threads == 0 || threads > 1024 || threads % 32 != 0) {
        std::snprintf(err, errlen, "block of %zu threads (want a multiple of 32, at most 1024)",
                      threads);
        return 1;
    }
    Call<A...> c{k, params};
    Block b;
    b.bdim = bd;
    b.gdim = g;
    b.fibers.resize(threads);
    b.stacks.resize(threads * STACK);
    b.entry = &Call<A...>::run;
    b.arg = &c;
    Block* saved = blk;
    blk = &b;
    for (unsigned z = 0; z < g.z; ++z)
        for (unsigned y = 0; y < g.y; ++y)
            for (unsigned x = 0; x < g.x; ++x) {
                b.bidx = dim3{x, y, z};
                if (const char* e = run_block(b)) {
                    std::snprintf(err, errlen, "block (%u, %u, %u): %s", x, y, z, e);
                    blk = saved;
                    return 1;
                }
            }
    blk = saved;
    return 0;
}

}  // namespace emu

#define threadIdx (emu::blk->cur->tid)
#define blockIdx (emu::blk->bidx)
#define blockDim (emu::blk->bdim)
#define gridDim (emu::blk->gdim)

inline void __syncthreads() { emu::wait(emu::WAIT_BLOCK); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    emu::Fiber* me = emu::blk->cur;
    size_t i = (size_t)(me - emu::blk->fibers.data());
    me->shfl = v;
    emu::wait(emu::WAIT_WARP);  // every lane has deposited its value
    float r = emu::blk->fibers[(i & ~(size_t)31) | ((i & 31) ^ (size_t)lane_mask)].shfl;
    emu::wait(emu::WAIT_WARP);  // every lane has read before any deposits again
    return r;
}

#define EMU(name)                                                                              \
    extern "C" int emu_##name(const unsigned* grid, const unsigned* block, void** params,      \
                              char* err, size_t errlen) {                                      \
        return emu::launch(name, grid, block, params, err, errlen);                            \
    }
