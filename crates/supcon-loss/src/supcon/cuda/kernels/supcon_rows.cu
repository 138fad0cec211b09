// SupCon / SimCLR loss: the O((n + M)·D) kernels around the tiled passes of supcon_tiles.cu.
//
//   supcon_gather_rows   features [B, V, D] → contrast rows C [V·B, D] (view-major), optionally
//                        L2-normalized (1/‖x‖ kept for the backward); queue keys go through it
//                        too, as a [K, 1, D] batch.
//   supcon_class_sums    S_y = Σ_{y_j = y} c_j, or T_y = Σ_{i∈I, y_i = y} coef·a_i/|P(i)|:
//                        a segmented reduction over rows sorted by class (deterministic, f64).
//   supcon_sum_terms     Σ_i ℓ_i in f64, one block, fixed order (deterministic).
//   supcon_finalize_grad ∂L/∂f[b, v] = ∂L/∂a + ∂L/∂c (+ L_out's class-sum terms), then the
//                        normalization backward, scattered back to [B, V, D].
//
// No #include: NVRTC compiles this without CUDA headers.

typedef long long i64;

#define SUPCON_ROW_WARPS 8  // warps (rows) per block of the row-wise kernels
#define SUPCON_SUM_THREADS 256
#define SUPCON_CLASS_THREADS 128

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per source row r = b·V + v → contrast row j = v·B + b (B = batch, V = views).
// out_inv_norm[j] = 1/‖x‖ when normalizing, else 1.
extern "C" __global__ void __launch_bounds__(SUPCON_ROW_WARPS * 32)
supcon_gather_rows(const float* __restrict__ F, int B, int V, int D, int normalize,
                   float* __restrict__ C, float* __restrict__ out_inv_norm) {
    const int lane = threadIdx.x % 32;
    const i64 r = (i64)blockIdx.x * SUPCON_ROW_WARPS + threadIdx.x / 32;
    if (r >= (i64)B * V) return;
    const i64 b = r / V;
    const i64 v = r % V;
    const i64 j = v * B + b;
    const float* src = F + r * D;
    float inv = 1.0f;
    if (normalize) {
        double ss = 0.0;
        for (int d = lane; d < D; d += 32) ss += (double)src[d] * (double)src[d];
        ss = warp_sum_f64(ss);
        inv = (float)(1.0 / sqrt(ss));
    }
    float* dst = C + j * D;
    for (int d = lane; d < D; d += 32) dst[d] = src[d] * inv;
    if (lane == 0) out_inv_norm[j] = inv;
}

// grid (classes, ceil(D / 128)), 128 threads: out[y, d] = Σ_{r ∈ segment y} w(perm[r])·C[perm[r], d]
// with perm the contrast rows sorted by class and seg[y] .. seg[y+1] the segment of class y.
// weighted = 0: w = 1 (S, over all M rows). weighted = 1: w(j) = coef/npos[j] for anchors
// j < n with npos[j] > 0, else 0 (T).
extern "C" __global__ void __launch_bounds__(SUPCON_CLASS_THREADS)
supcon_class_sums(const float* __restrict__ C, int D, const int* __restrict__ perm,
                  const int* __restrict__ seg, int weighted, const int* __restrict__ npos, int n,
                  float coef, float* __restrict__ out) {
    const i64 y = blockIdx.x;
    const int d = blockIdx.y * SUPCON_CLASS_THREADS + threadIdx.x;
    if (d >= D) return;
    double acc = 0.0;
    for (int r = seg[y]; r < seg[y + 1]; ++r) {
        const int j = perm[r];
        double w = 1.0;
        if (weighted) w = (j < n && npos[j] > 0) ? (double)coef / (double)npos[j] : 0.0;
        if (w != 0.0) acc += w * (double)C[(i64)j * D + d];
    }
    out[y * D + d] = (float)acc;
}

// One block of 256 threads: *out = Σ_{i<n} terms[i] in f64, in a fixed order.
extern "C" __global__ void __launch_bounds__(SUPCON_SUM_THREADS)
supcon_sum_terms(const float* __restrict__ terms, int n, double* __restrict__ out) {
    __shared__ double part[SUPCON_SUM_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += SUPCON_SUM_THREADS) acc += (double)terms[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = SUPCON_SUM_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = part[0];
}

// ∂L/∂z_j for contrast row j < V·B (a feature row), as the sum of both sides:
//   dC[j] + [j < n] dA[j]
//   L_out also: − wj·(S_{y_j} − c_j)             (anchor side: Σ_{p∈P(j)} w c_p, wj = coef/|P(j)|)
//               − (T_{y_j} − wj·c_j)              (contrast side: Σ_{i: j∈P(i)} w a_i)
__device__ __forceinline__ float grad_z(const float* __restrict__ dA, const float* __restrict__ dC,
                                        const float* __restrict__ C, const float* __restrict__ S,
                                        const float* __restrict__ T, i64 j, int yj, float wj,
                                        int n, int D, int lout, int d) {
    float g = dC[j * D + d];
    if (j < n) g += dA[j * D + d];
    if (lout) {
        const float c = C[j * D + d];
        g -= wj * (S[(i64)yj * D + d] - c);
        g -= T[(i64)yj * D + d] - wj * c;
    }
    return g;
}

// One warp per feature row r = b·V + v (contrast row j = v·B + b): the gradient of the loss
// with respect to the input features, with the normalization backward
// ∂L/∂x = (∂L/∂z − z (z·∂L/∂z)) / ‖x‖ when normalizing.
extern "C" __global__ void __launch_bounds__(SUPCON_ROW_WARPS * 32)
supcon_finalize_grad(const float* __restrict__ dA, const float* __restrict__ dC,
                     const float* __restrict__ C, const float* __restrict__ inv_norm,
                     const float* __restrict__ S, const float* __restrict__ T,
                     const int* __restrict__ cls, const int* __restrict__ npos, int n, int B,
                     int V, int D, float coef, int lout, int normalize, float* __restrict__ grad) {
    const int lane = threadIdx.x % 32;
    const i64 r = (i64)blockIdx.x * SUPCON_ROW_WARPS + threadIdx.x / 32;
    if (r >= (i64)B * V) return;
    const i64 b = r / V;
    const i64 v = r % V;
    const i64 j = v * B + b;
    const int yj = cls[j];
    const float wj = (lout && j < n && npos[j] > 0) ? coef / (float)npos[j] : 0.0f;
    float* dst = grad + r * D;
    if (!normalize) {
        for (int d = lane; d < D; d += 32) dst[d] = grad_z(dA, dC, C, S, T, j, yj, wj, n, D, lout, d);
        return;
    }
    double dot = 0.0;
    for (int d = lane; d < D; d += 32)
        dot += (double)C[j * D + d] * (double)grad_z(dA, dC, C, S, T, j, yj, wj, n, D, lout, d);
    const float zg = (float)warp_sum_f64(dot);
    const float inv = inv_norm[j];
    for (int d = lane; d < D; d += 32) {
        const float g = grad_z(dA, dC, C, S, T, j, yj, wj, n, D, lout, d);
        dst[d] = (g - C[j * D + d] * zg) * inv;
    }
}
