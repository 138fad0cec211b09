// A CPU emulation of the small part of CUDA C that supcon_*.cu use, so the real kernel sources
// run (slowly, exactly) on a machine without a GPU: tests/cuda_emulated.rs compiles them with
// the host C++ compiler and this header, and runs the launch schedule of `plan::schedule`.
//
// A block's threads are coroutines (ucontext) on one OS thread; blocks run one after another,
// so `__shared__` can be a function-local `static`. `__syncthreads` yields to the scheduler
// until every live thread has arrived (exited threads count as arrived, as on the GPU). Warp
// shuffles and the TF32 `mma.sync` are emulated on top of that barrier, which is sound here
// because every kernel calls them uniformly across the block.
#pragma once

#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <ucontext.h>

struct EmuDim3 {
    unsigned x = 0, y = 0, z = 0;
};
struct float4 {
    float x, y, z, w;
};

static EmuDim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned v; std::memcpy(&v, &f, 4); return v; }
inline void __trap() { std::fprintf(stderr, "__trap()\n"); std::abort(); }

namespace emu {

constexpr size_t kStack = 256 * 1024;

struct Scheduler {
    ucontext_t main_ctx;
    std::vector<ucontext_t> ctx;
    std::vector<int> state;  // 0 ready, 1 at a barrier, 2 done
    std::vector<char> stacks;
    std::vector<double> slots;  // shuffle exchange, one per thread (and 6 for mma)
    std::function<void()> body;
    int current = 0;
};

inline Scheduler& sched() {
    static Scheduler s;
    return s;
}

inline void trampoline(int t) {
    Scheduler& s = sched();
    s.body();
    s.state[t] = 2;
    swapcontext(&s.ctx[t], &s.main_ctx);
}

inline void barrier() {
    Scheduler& s = sched();
    const int me = s.current;
    s.state[me] = 1;
    swapcontext(&s.ctx[me], &s.main_ctx);
}

// Runs `body` for every thread of every block of the grid.
inline void launch(EmuDim3 grid, EmuDim3 block, const std::function<void()>& body) {
    Scheduler& s = sched();
    const int n = (int)(block.x * block.y * block.z);
    if (block.y != 1 || block.z != 1 || grid.z != 1) {
        std::fprintf(stderr, "emulator: only 1-d blocks and 2-d grids\n");
        std::abort();
    }
    s.ctx.assign(n, ucontext_t{});
    s.state.assign(n, 0);
    if (s.stacks.size() < (size_t)n * kStack) s.stacks.assign((size_t)n * kStack, 0);
    s.slots.assign((size_t)n * 8, 0.0);
    s.body = body;
    gridDim = grid;
    blockDim = block;
    for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            blockIdx = EmuDim3{bx, by, 0};
            for (int t = 0; t < n; ++t) {
                getcontext(&s.ctx[t]);
                s.ctx[t].uc_stack.ss_sp = s.stacks.data() + (size_t)t * kStack;
                s.ctx[t].uc_stack.ss_size = kStack;
                s.ctx[t].uc_link = &s.main_ctx;
                makecontext(&s.ctx[t], (void (*)())trampoline, 1, t);
                s.state[t] = 0;
            }
            for (;;) {
                bool live = false;
                for (int t = 0; t < n; ++t) {
                    if (s.state[t] != 0) continue;
                    s.current = t;
                    threadIdx = EmuDim3{(unsigned)t, 0, 0};
                    swapcontext(&s.main_ctx, &s.ctx[t]);
                }
                for (int t = 0; t < n; ++t) {
                    if (s.state[t] == 1) {
                        s.state[t] = 0;
                        live = true;
                    }
                }
                if (!live) break;
            }
        }
    }
}

}  // namespace emu

inline void __syncthreads() { emu::barrier(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    emu::Scheduler& s = emu::sched();
    const int me = s.current;
    s.slots[(size_t)me * 8] = (double)v;
    emu::barrier();
    const int partner = (me & ~31) | ((me & 31) ^ lane_mask);
    const T r = (T)s.slots[(size_t)partner * 8];
    emu::barrier();
    return r;
}

// cvt.rna.tf32.f32: round to nearest (ties away) at 10 mantissa bits.
inline float supcon_emulated_tf32(float v) {
    unsigned u = __float_as_uint(v);
    u = (u + 0x1000u) & 0xffffe000u;
    return __uint_as_float(u);
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 with the PTX ISA's fragment layouts:
// groupID g = lane/4, t = lane%4; A: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
// B: b0 (k=t, n=g), b1 (k=t+4, n=g); C/D: c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1).
inline void supcon_emulated_mma_tf32(float d[4], unsigned a0, unsigned a1, unsigned a2,
                                     unsigned a3, unsigned b0, unsigned b1) {
    emu::Scheduler& s = emu::sched();
    const int me = s.current;
    double* mine = &s.slots[(size_t)me * 8];
    mine[0] = __uint_as_float(a0);
    mine[1] = __uint_as_float(a1);
    mine[2] = __uint_as_float(a2);
    mine[3] = __uint_as_float(a3);
    mine[4] = __uint_as_float(b0);
    mine[5] = __uint_as_float(b1);
    emu::barrier();
    const int base = me & ~31;
    const int lane = me & 31;
    float A[16][8], B[8][8];
    for (int l = 0; l < 32; ++l) {
        const double* f = &s.slots[(size_t)(base + l) * 8];
        const int g = l / 4, t = l % 4;
        A[g][t] = (float)f[0];
        A[g + 8][t] = (float)f[1];
        A[g][t + 4] = (float)f[2];
        A[g + 8][t + 4] = (float)f[3];
        B[t][g] = (float)f[4];
        B[t + 4][g] = (float)f[5];
    }
    const int g = lane / 4, t = lane % 4;
    for (int q = 0; q < 4; ++q) {
        const int row = g + (q >= 2 ? 8 : 0);
        const int col = 2 * t + (q & 1);
        float acc = d[q];
        for (int k = 0; k < 8; ++k) acc += A[row][k] * B[k][col];
        d[q] = acc;
    }
    emu::barrier();
}
