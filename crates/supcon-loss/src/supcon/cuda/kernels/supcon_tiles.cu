// SupCon / SimCLR loss: the three O(n·M·D) passes (flash-attention structure).
//
// Compiled at run time by NVRTC (no #include: NVRTC 13 does not ship <mma.h> as a built-in
// header, so the tensor-core path issues `mma.sync` through inline PTX).
//
// Layout (see ../mod.rs and the book's loss page, docs/src/loss-math.md):
//   C      [M, D]  contrast rows c_j (view-major batch rows, then queue keys), already
//                  normalized when the loss normalizes. Anchors a_i are rows 0..n of C.
//   cls    [M]     dense class id of every contrast row.
//   npos   [n]     |P(i)|, positives of anchor i.
//   lse    [n]     LSE_i  = log Σ_{j≠i} exp(s_ij)            (written by the forward pass)
//   lsep   [n]     LSEP_i = log Σ_{j∈P(i)} exp(s_ij)         (L_in only)
//   gco    [n]     G coefficient of anchor i: (τ/τ_base)/(|I|·τ) if |P(i)| > 0, else 0.
//
// Every block owns BM output rows and loops over BN-row tiles of the other side, recomputing
// the BM×BN score tile from shared memory. Nothing n×M is ever stored.
//
// Thread layout: 256 threads as 16×16 (ty, tx); thread (ty, tx) owns score-tile rows
// ty*4 .. ty*4+3 and columns tx*4 .. tx*4+3 (the "SIMT layout"). The tensor-core variant
// computes the tile with mma.sync into shared memory and reads it back in that same layout,
// so everything after the score tile is shared by both variants.
//
// The host mirrors these constants (mod.rs `tile` module) and a test checks they agree.
#define SUPCON_BM 64
#define SUPCON_BN 64
#define SUPCON_BK 16
#define SUPCON_DS 128
#define SUPCON_THREADS 256
#define SUPCON_PAD 8

typedef long long i64;

// No <math.h> under NVRTC: −∞ spelled out (the online log-sum-exp starts there).
#define SUPCON_NEG_INF (-__int_as_float(0x7f800000))

// One k-chunk of two row blocks, stored transposed ([k][row]) so the inner product loop reads
// 16-byte vectors along rows. The row stride BM + PAD = 72 floats keeps the tensor-core
// fragment reads (rows t, t+4 × 8 columns) free of bank conflicts.
struct ScoreChunk {
    float x[SUPCON_BK][SUPCON_BM + SUPCON_PAD];
    float y[SUPCON_BK][SUPCON_BN + SUPCON_PAD];
};

// The product phase of the backward passes reads BK rows × DS columns of the other side; the
// padded row stride (136 floats) keeps the tensor-core B-fragment reads free of bank conflicts.
struct ProductChunk {
    float y[SUPCON_BK][SUPCON_DS + SUPCON_PAD];
};

// The score chunk and the product chunk are never live at the same time (barriers between).
union TileScratch {
    ScoreChunk score;
    ProductChunk product;
};

// TF32 instructions exist from sm_80 on; the host refuses Precision::Tf32 below that, and the
// f32 entry points must still compile for older targets.
__device__ __forceinline__ float round_to_tf32(float v) {
#if __CUDA_ARCH__ >= 800
    unsigned int r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return __uint_as_float(r);
#elif defined(SUPCON_EMULATED)  // CPU emulation (emulate/cuda_shim.h), tests only
    return supcon_emulated_tf32(v);
#else
    __trap();
    return v;
#endif
}

// dst[k][row] = src[(r0 + row) * D + k0 + k], zero outside [0, rows) × [0, D).
template <bool TF32>
__device__ __forceinline__ void load_chunk(float (*dst)[SUPCON_BM + SUPCON_PAD],
                                           const float* __restrict__ src, i64 r0, i64 rows, int D,
                                           int k0) {
    for (int e = threadIdx.x; e < SUPCON_BM * SUPCON_BK; e += SUPCON_THREADS) {
        const int row = e / SUPCON_BK;
        const int k = e % SUPCON_BK;
        const i64 r = r0 + row;
        const int kk = k0 + k;
        float v = (r < rows && kk < D) ? src[r * (i64)D + kk] : 0.0f;
        dst[k][row] = TF32 ? round_to_tf32(v) : v;
    }
}

// s[r][c] = x_{x0+ty*4+r} · y_{y0+tx*4+c} in f32 FMA (rows outside the range give 0).
__device__ __forceinline__ void scores_simt(TileScratch& sm, const float* __restrict__ X, i64 x0,
                                            i64 nx, const float* __restrict__ Y, i64 y0, i64 ny,
                                            int D, float s[4][4]) {
    const int tx = threadIdx.x % 16;
    const int ty = threadIdx.x / 16;
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[r][c] = 0.0f;
    for (int k0 = 0; k0 < D; k0 += SUPCON_BK) {
        load_chunk<false>(sm.score.x, X, x0, nx, D, k0);
        load_chunk<false>(sm.score.y, Y, y0, ny, D, k0);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < SUPCON_BK; ++k) {
            const float4 a = *reinterpret_cast<const float4*>(&sm.score.x[k][ty * 4]);
            const float4 b = *reinterpret_cast<const float4*>(&sm.score.y[k][tx * 4]);
            const float av[4] = {a.x, a.y, a.z, a.w};
            const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int c = 0; c < 4; ++c) s[r][c] = fmaf(av[r], bv[c], s[r][c]);
        }
        __syncthreads();
    }
}

// D = A·B + D on one m16n8k8 TF32 tile (A row-major, B column-major, f32 accumulators).
__device__ __forceinline__ void mma_tf32(float d[4], unsigned a0, unsigned a1, unsigned a2,
                                         unsigned a3, unsigned b0, unsigned b1) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#elif defined(SUPCON_EMULATED)
    supcon_emulated_mma_tf32(d, a0, a1, a2, a3, b0, b1);
#else
    __trap();
#endif
}

// The same tile with tensor cores: 8 warps as 4 (16-row strips) × 2 (32-column strips), each
// warp 4 m16n8 accumulators; the tile goes through `tile` (shared) into the SIMT layout.
__device__ __forceinline__ void scores_tf32(TileScratch& sm,
                                            float (*tile)[SUPCON_BN + 1],
                                            const float* __restrict__ X, i64 x0, i64 nx,
                                            const float* __restrict__ Y, i64 y0, i64 ny, int D,
                                            float s[4][4]) {
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int wr = warp / 2;  // rows 16*wr .. 16*wr+15
    const int wc = warp % 2;  // columns 32*wc .. 32*wc+31
    const int g = lane / 4;   // groupID
    const int t = lane % 4;   // threadID_in_group
    float acc[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[nt][q] = 0.0f;
    for (int k0 = 0; k0 < D; k0 += SUPCON_BK) {
        load_chunk<true>(sm.score.x, X, x0, nx, D, k0);
        load_chunk<true>(sm.score.y, Y, y0, ny, D, k0);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < SUPCON_BK; kk += 8) {
            const int m = 16 * wr + g;
            const unsigned a0 = __float_as_uint(sm.score.x[kk + t][m]);
            const unsigned a1 = __float_as_uint(sm.score.x[kk + t][m + 8]);
            const unsigned a2 = __float_as_uint(sm.score.x[kk + t + 4][m]);
            const unsigned a3 = __float_as_uint(sm.score.x[kk + t + 4][m + 8]);
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const int col = 32 * wc + 8 * nt + g;
                const unsigned b0 = __float_as_uint(sm.score.y[kk + t][col]);
                const unsigned b1 = __float_as_uint(sm.score.y[kk + t + 4][col]);
                mma_tf32(acc[nt], a0, a1, a2, a3, b0, b1);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
        const int row = 16 * wr + g;
        const int col = 32 * wc + 8 * nt + 2 * t;
        tile[row][col] = acc[nt][0];
        tile[row][col + 1] = acc[nt][1];
        tile[row + 8][col] = acc[nt][2];
        tile[row + 8][col + 1] = acc[nt][3];
    }
    __syncthreads();
    const int tx = threadIdx.x % 16;
    const int ty = threadIdx.x / 16;
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[r][c] = tile[ty * 4 + r][tx * 4 + c];
    // Callers overwrite `tile` only after another barrier (the next k-loop or their own).
}

template <bool TF32>
__device__ __forceinline__ void scores(TileScratch& sm, float (*tile)[SUPCON_BN + 1],
                                       const float* __restrict__ X, i64 x0, i64 nx,
                                       const float* __restrict__ Y, i64 y0, i64 ny, int D,
                                       float s[4][4]) {
    if (TF32) {
        scores_tf32(sm, tile, X, x0, nx, Y, y0, ny, D, s);
    } else {
        scores_simt(sm, X, x0, nx, Y, y0, ny, D, s);
    }
}

// Online log-sum-exp: (m, l) holds max and Σ exp(v − max); one exp per element.
__device__ __forceinline__ void online_push(float& m, float& l, float v) {
    if (v > m) {
        l = l * expf(m - v) + 1.0f;
        m = v;
    } else {
        l += expf(v - m);
    }
}

__device__ __forceinline__ void online_merge(float& m, float& l, float m2, float l2) {
    if (m2 == SUPCON_NEG_INF) return;
    if (m == SUPCON_NEG_INF) {
        m = m2;
        l = l2;
        return;
    }
    const float mx = fmaxf(m, m2);
    l = l * expf(m - mx) + l2 * expf(m2 - mx);
    m = mx;
}

// Forward: per anchor LSE_i (and LSEP_i), then ℓ_i (0 for anchors without positives).
// L_out's positive term uses the class sums S [classes, D]: Σ_p s_ip = a_i·(S_{y_i} − a_i)/τ.
template <bool TF32>
__device__ void forward_impl(const float* __restrict__ C, const int* __restrict__ cls,
                             const int* __restrict__ npos, const float* __restrict__ S, int n,
                             int M, int D, float inv_tau, int variant_in,
                             float* __restrict__ lse_out, float* __restrict__ lsep_out,
                             float* __restrict__ ell_out) {
    __shared__ __align__(16) TileScratch sm;
    __shared__ float tile[TF32 ? SUPCON_BM : 1][SUPCON_BN + 1];
    __shared__ float red[4][SUPCON_BM][17];
    __shared__ int row_cls[SUPCON_BM];

    const int tx = threadIdx.x % 16;
    const int ty = threadIdx.x / 16;
    const i64 i0 = (i64)blockIdx.x * SUPCON_BM;
    if (threadIdx.x < SUPCON_BM) {
        const i64 i = i0 + threadIdx.x;
        row_cls[threadIdx.x] = i < n ? cls[i] : -1;
    }
    __syncthreads();

    float m[4], l[4], mp[4], lp[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        m[r] = SUPCON_NEG_INF;
        l[r] = 0.0f;
        mp[r] = SUPCON_NEG_INF;
        lp[r] = 0.0f;
    }
    int my_cls[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) my_cls[r] = row_cls[ty * 4 + r];

    for (i64 j0 = 0; j0 < M; j0 += SUPCON_BN) {
        float s[4][4];
        scores<TF32>(sm, tile, C, i0, n, C, j0, M, D, s);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const i64 j = j0 + tx * 4 + c;
            if (j >= M) continue;
            const int cj = cls[j];
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const i64 i = i0 + ty * 4 + r;
                if (i >= n || i == j) continue;
                const float v = s[r][c] * inv_tau;
                online_push(m[r], l[r], v);
                if (variant_in && cj == my_cls[r]) online_push(mp[r], lp[r], v);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 4; ++r) {
        red[0][ty * 4 + r][tx] = m[r];
        red[1][ty * 4 + r][tx] = l[r];
        red[2][ty * 4 + r][tx] = mp[r];
        red[3][ty * 4 + r][tx] = lp[r];
    }
    __syncthreads();
    if (threadIdx.x < SUPCON_BM) {
        const int row = threadIdx.x;
        const i64 i = i0 + row;
        if (i < n) {
            float rm = SUPCON_NEG_INF, rl = 0.0f, rmp = SUPCON_NEG_INF, rlp = 0.0f;
            for (int q = 0; q < 16; ++q) {
                online_merge(rm, rl, red[0][row][q], red[1][row][q]);
                online_merge(rmp, rlp, red[2][row][q], red[3][row][q]);
            }
            const float lse = rm + logf(rl);
            const int np = npos[i];
            float lsep = 0.0f;
            float ell = 0.0f;
            if (np > 0) {
                if (variant_in) {
                    lsep = rmp + logf(rlp);
                    ell = lse - lsep + logf((float)np);
                } else {
                    // a_i·(S_y − a_i), accumulated in double: S_y can be large.
                    const float* a = C + i * (i64)D;
                    const float* sy = S + (i64)row_cls[row] * D;
                    double dot = 0.0;
                    for (int d = 0; d < D; ++d) dot += (double)a[d] * ((double)sy[d] - (double)a[d]);
                    ell = (float)((double)lse - dot * (double)inv_tau / (double)np);
                }
            }
            lse_out[i] = lse;
            lsep_out[i] = lsep;
            ell_out[i] = ell;
        }
    }
}

// Backward, one pass: out[x, d] = Σ_y G(x, y) · Y_y[d] over the other side, for the block's BM
// rows and the DS-column slice blockIdx.y. ROWS_ARE_ANCHORS: x = anchor i (nx = n), y = contrast
// row j (ny = M) → ∂L/∂a. Otherwise x = contrast row j (nx = V·B, queue rows get no gradient),
// y = anchor i (ny = n) → ∂L/∂c. G(i, j) = gco_i · (π_ij − [L_in, y_j = y_i] exp(s_ij − LSEP_i))
// for j ≠ i; L_out's 1/|P(i)| part is added from class sums by `finalize_grad`.
template <bool TF32, bool ROWS_ARE_ANCHORS>
__device__ void grad_impl(const float* __restrict__ C, const int* __restrict__ cls,
                          const float* __restrict__ lse, const float* __restrict__ lsep,
                          const float* __restrict__ gco, int n, int M, int nx, int D,
                          float inv_tau, int variant_in, float* __restrict__ out) {
    __shared__ __align__(16) TileScratch sm;
    __shared__ float tile[SUPCON_BM][SUPCON_BN + 1];  // scores (TF32), then G
    // Per-anchor constants: of the block's rows (anchors) or of the current tile's columns.
    __shared__ float k_lse[SUPCON_BM];
    __shared__ float k_lsep[SUPCON_BM];
    __shared__ float k_g[SUPCON_BM];
    __shared__ int k_cls[SUPCON_BM];
    __shared__ int x_cls[SUPCON_BM];

    const int tx = threadIdx.x % 16;
    const int ty = threadIdx.x / 16;
    const i64 x0 = (i64)blockIdx.x * SUPCON_BM;
    const int d0 = blockIdx.y * SUPCON_DS;
    const int ny = ROWS_ARE_ANCHORS ? M : n;

    if (threadIdx.x < SUPCON_BM) {
        const i64 x = x0 + threadIdx.x;
        x_cls[threadIdx.x] = x < nx ? cls[x] : -1;
        if (ROWS_ARE_ANCHORS) {
            const bool ok = x < nx;
            k_lse[threadIdx.x] = ok ? lse[x] : 0.0f;
            k_lsep[threadIdx.x] = ok ? lsep[x] : 0.0f;
            k_g[threadIdx.x] = ok ? gco[x] : 0.0f;
        }
    }
    __syncthreads();

    // 32 accumulators per thread. SIMT layout: acc[r*8 + e] is (row ty*4+r, column tx+16e).
    // TF32 layout: warp (wr, wc) owns rows 16wr.., columns 64wc..; acc[nt*4 + q] is the m16n8
    // accumulator q of column tile nt.
    float acc[32];
#pragma unroll
    for (int e = 0; e < 32; ++e) acc[e] = 0.0f;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int wr = warp / 2;
    const int wc = warp % 2;
    const int g = lane / 4;
    const int t = lane % 4;

    for (i64 y0 = 0; y0 < ny; y0 += SUPCON_BN) {
        if (!ROWS_ARE_ANCHORS && threadIdx.x < SUPCON_BN) {
            // Columns are anchors: their constants change with the tile. The previous tile's
            // readers finished at the barrier that ends the loop body.
            const i64 y = y0 + threadIdx.x;
            const bool ok = y < ny;
            k_lse[threadIdx.x] = ok ? lse[y] : 0.0f;
            k_lsep[threadIdx.x] = ok ? lsep[y] : 0.0f;
            k_g[threadIdx.x] = ok ? gco[y] : 0.0f;
            k_cls[threadIdx.x] = ok ? cls[y] : -1;
        }
        float s[4][4];
        scores<TF32>(sm, tile, C, x0, nx, C, y0, ny, D, s);  // contains barriers
        if (TF32) __syncthreads();  // every thread has read its scores out of `tile`

#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const i64 y = y0 + tx * 4 + c;
            const int ycls = (ROWS_ARE_ANCHORS && y < ny) ? cls[y] : -1;
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const i64 x = x0 + ty * 4 + r;
                float gval = 0.0f;
                if (x < nx && y < ny && x != y) {
                    const int ka = ROWS_ARE_ANCHORS ? ty * 4 + r : tx * 4 + c;
                    const float coef = k_g[ka];
                    if (coef != 0.0f) {
                        const float v = s[r][c] * inv_tau;
                        float p = expf(v - k_lse[ka]);
                        if (variant_in) {
                            const int ci = ROWS_ARE_ANCHORS ? x_cls[ty * 4 + r] : k_cls[tx * 4 + c];
                            const int cj = ROWS_ARE_ANCHORS ? ycls : x_cls[ty * 4 + r];
                            if (ci == cj) p -= expf(v - k_lsep[ka]);
                        }
                        gval = coef * p;
                    }
                }
                tile[ty * 4 + r][tx * 4 + c] = TF32 ? round_to_tf32(gval) : gval;
            }
        }
        __syncthreads();

        // acc[x, d] += Σ_q G[x, q] · Y[y0 + q, d0 + d], BK rows of Y at a time.
        for (int kk = 0; kk < SUPCON_BN; kk += SUPCON_BK) {
            for (int e = threadIdx.x; e < SUPCON_BK * SUPCON_DS; e += SUPCON_THREADS) {
                const int q = e / SUPCON_DS;
                const int d = e % SUPCON_DS;
                const i64 yr = y0 + kk + q;
                const int dd = d0 + d;
                const float yv = (yr < ny && dd < D) ? C[yr * (i64)D + dd] : 0.0f;
                sm.product.y[q][d] = TF32 ? round_to_tf32(yv) : yv;
            }
            __syncthreads();
            if (TF32) {
                // acc[64 × 128] += G[64 × 16] · Y[16 × 128] as m16n8k8 tiles: A = G (row-major in
                // `tile`), B = Y (k-major in the chunk), 8 column tiles per warp.
#pragma unroll
                for (int ks = 0; ks < SUPCON_BK; ks += 8) {
                    const int m = 16 * wr + g;
                    const int k = kk + ks + t;
                    const unsigned a0 = __float_as_uint(tile[m][k]);
                    const unsigned a1 = __float_as_uint(tile[m + 8][k]);
                    const unsigned a2 = __float_as_uint(tile[m][k + 4]);
                    const unsigned a3 = __float_as_uint(tile[m + 8][k + 4]);
#pragma unroll
                    for (int nt = 0; nt < 8; ++nt) {
                        const int col = 64 * wc + 8 * nt + g;
                        const unsigned b0 = __float_as_uint(sm.product.y[ks + t][col]);
                        const unsigned b1 = __float_as_uint(sm.product.y[ks + t + 4][col]);
                        mma_tf32(&acc[nt * 4], a0, a1, a2, a3, b0, b1);
                    }
                }
            } else {
#pragma unroll
                for (int q = 0; q < SUPCON_BK; ++q) {
                    float gv[4];
#pragma unroll
                    for (int r = 0; r < 4; ++r) gv[r] = tile[ty * 4 + r][kk + q];
#pragma unroll
                    for (int e = 0; e < 8; ++e) {
                        const float yv = sm.product.y[q][tx + 16 * e];
#pragma unroll
                        for (int r = 0; r < 4; ++r) acc[r * 8 + e] = fmaf(gv[r], yv, acc[r * 8 + e]);
                    }
                }
            }
            __syncthreads();
        }
    }

    if (TF32) {
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const i64 x = x0 + 16 * wr + g + (q >= 2 ? 8 : 0);
                const int d = d0 + 64 * wc + 8 * nt + 2 * t + (q & 1);
                if (x < nx && d < D) out[x * (i64)D + d] = acc[nt * 4 + q];
            }
        }
    } else {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 x = x0 + ty * 4 + r;
            if (x >= nx) continue;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int d = d0 + tx + 16 * e;
                if (d < D) out[x * (i64)D + d] = acc[r * 8 + e];
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(SUPCON_THREADS)
supcon_forward_f32(const float* C, const int* cls, const int* npos, const float* S, int n, int M,
                   int D, float inv_tau, int variant_in, float* lse, float* lsep, float* ell) {
    forward_impl<false>(C, cls, npos, S, n, M, D, inv_tau, variant_in, lse, lsep, ell);
}

extern "C" __global__ void __launch_bounds__(SUPCON_THREADS)
supcon_forward_tf32(const float* C, const int* cls, const int* npos, const float* S, int n, int M,
                    int D, float inv_tau, int variant_in, float* lse, float* lsep, float* ell) {
    forward_impl<true>(C, cls, npos, S, n, M, D, inv_tau, variant_in, lse, lsep, ell);
}

extern "C" __global__ void __launch_bounds__(SUPCON_THREADS)
supcon_grad_anchor_f32(const float* C, const int* cls, const float* lse, const float* lsep,
                       const float* gco, int n, int M, int D, float inv_tau, int variant_in,
                       float* dA) {
    grad_impl<false, true>(C, cls, lse, lsep, gco, n, M, n, D, inv_tau, variant_in, dA);
}

extern "C" __global__ void __launch_bounds__(SUPCON_THREADS)
supcon_grad_anchor_tf32(const float* C, const int* cls, const float* lse, const float* lsep,
                        const float* gco, int n, int M, int D, float inv_tau, int variant_in,
                        float* dA) {
    grad_impl<true, true>(C, cls, lse, lsep, gco, n, M, n, D, inv_tau, variant_in, dA);
}

extern "C" __global__ void __launch_bounds__(SUPCON_THREADS)
supcon_grad_contrast_f32(const float* C, const int* cls, const float* lse, const float* lsep,
                         const float* gco, int n, int M, int rows, int D, float inv_tau,
                         int variant_in, float* dC) {
    grad_impl<false, false>(C, cls, lse, lsep, gco, n, M, rows, D, inv_tau, variant_in, dC);
}

extern "C" __global__ void __launch_bounds__(SUPCON_THREADS)
supcon_grad_contrast_tf32(const float* C, const int* cls, const float* lse, const float* lsep,
                          const float* gco, int n, int M, int rows, int D, float inv_tau,
                          int variant_in, float* dC) {
    grad_impl<true, false>(C, cls, lse, lsep, gco, n, M, rows, D, inv_tau, variant_in, dC);
}
