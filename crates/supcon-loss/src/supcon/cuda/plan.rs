//! Host-side planning for the CUDA kernels: tile constants, launch dimensions, shared-memory
//! budgets and the class index (dense class ids, |P(i)|, rows sorted by class). Pure Rust, no
//! CUDA: it is compiled and unit-tested in every build, GPU or not.

use crate::{ContrastMode, LossError};

/// Anchor rows per block of the tiled kernels (`SUPCON_BM` in `supcon_tiles.cu`).
pub const BM: usize = 64;
/// Rows of the other side per tile (`SUPCON_BN`).
pub const BN: usize = 64;
/// Feature columns per shared-memory chunk of the score tile (`SUPCON_BK`).
pub const BK: usize = 16;
/// Feature columns per block of the backward passes (`SUPCON_DS`): grid.y = ⌈D / DS⌉.
pub const DS: usize = 128;
/// Threads per block of the tiled kernels (`SUPCON_THREADS`, 16 × 16).
pub const THREADS: usize = 256;
/// Padding of the transposed score chunks (`SUPCON_PAD`).
pub const PAD: usize = 8;
/// Warps (one row each) per block of the row-wise kernels (`SUPCON_ROW_WARPS`).
pub const ROW_WARPS: usize = 8;
/// Threads of the single-block f64 loss reduction (`SUPCON_SUM_THREADS`).
pub const SUM_THREADS: usize = 256;
/// Threads (feature columns) per block of the class-sum kernel (`SUPCON_CLASS_THREADS`).
pub const CLASS_THREADS: usize = 128;

/// Largest feature dimension the CUDA backend accepts. The backward passes recompute the score
/// tile once per DS-column slice, so cost grows as ⌈D/128⌉ × the forward; beyond 4096 the CPU
/// reference or a projection to a smaller head is the better tool.
pub const MAX_DIM: usize = 4096;
/// Row counts (n, M) are passed to the kernels as `int`.
pub const MAX_ROWS: usize = i32::MAX as usize;
/// Static shared memory a block may use without opting in to more (every kernel stays below).
pub const STATIC_SHARED_LIMIT: usize = 48 * 1024;
/// Largest grid.y of a launch.
pub const MAX_GRID_Y: usize = 65_535;

const F32: usize = 4;
const I32: usize = 4;

/// Matrix-unit precision of the O(n·M·D) passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Plain f32 FMA everywhere (the reference path).
    #[default]
    F32,
    /// Score tiles and G·rows products on the tensor cores in TF32 (10-bit mantissa inputs,
    /// f32 accumulation, `mma.sync.m16n8k8`, sm_80 or newer); every reduction stays f32/f64.
    Tf32,
}

impl Precision {
    /// The suffix of the kernel entry points (`supcon_forward_f32`, `supcon_forward_tf32`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
        }
    }
}

/// One of the three tiled kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKernel {
    /// LSE_i / LSEP_i / ℓ_i per anchor.
    Forward,
    /// ∂L/∂a_i = Σ_j G_ij c_j.
    GradAnchor,
    /// ∂L/∂c_j = Σ_i G_ij a_i.
    GradContrast,
}

impl TileKernel {
    /// Every tiled kernel.
    pub const ALL: [TileKernel; 3] = [
        TileKernel::Forward,
        TileKernel::GradAnchor,
        TileKernel::GradContrast,
    ];

    /// The kernel's entry point for `precision`.
    pub fn entry(self, precision: Precision) -> String {
        let stem = match self {
            TileKernel::Forward => "supcon_forward",
            TileKernel::GradAnchor => "supcon_grad_anchor",
            TileKernel::GradContrast => "supcon_grad_contrast",
        };
        format!("{stem}_{}", precision.suffix())
    }

    /// Static shared memory of one block in bytes, mirroring the `__shared__` declarations of
    /// `supcon_tiles.cu` (the NVRTC test compares it with ptxas's report).
    pub fn shared_bytes(self, precision: Precision) -> usize {
        let score_chunk = BK * (BM + PAD) * F32 + BK * (BN + PAD) * F32;
        let product_chunk = BK * (DS + PAD) * F32;
        let scratch = score_chunk.max(product_chunk);
        let tile = BM * (BN + 1) * F32;
        match self {
            TileKernel::Forward => {
                let reductions = 4 * BM * 17 * F32;
                let row_cls = BM * I32;
                let score_tile = if precision == Precision::Tf32 {
                    tile
                } else {
                    0
                };
                scratch + score_tile + reductions + row_cls
            }
            // tile (scores, then G) + k_lse, k_lsep, k_g + x_cls (+ k_cls for columns = anchors).
            TileKernel::GradAnchor => scratch + tile + 3 * BM * F32 + BM * I32,
            TileKernel::GradContrast => scratch + tile + 3 * BM * F32 + 2 * BM * I32,
        }
    }
}

/// Grid, block and dynamic shared memory of one launch (cudarc's `LaunchConfig` in the
/// `cuda` build; kept separate so it is testable without CUDA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    /// Blocks (x, y, z).
    pub grid: (u32, u32, u32),
    /// Threads per block (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block (every kernel here uses static shared memory only).
    pub shared_bytes: u32,
}

fn to_u32(value: usize, what: &str) -> Result<u32, LossError> {
    u32::try_from(value)
        .map_err(|_| LossError::Backend(format!("CUDA launch: {what} = {value} exceeds u32")))
}

fn dims(grid: (usize, usize), threads: usize) -> Result<LaunchDims, LossError> {
    Ok(LaunchDims {
        grid: (to_u32(grid.0, "grid.x")?, to_u32(grid.1, "grid.y")?, 1),
        block: (to_u32(threads, "block.x")?, 1, 1),
        shared_bytes: 0,
    })
}

/// The sizes of one loss evaluation, checked against the kernels' limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    /// B.
    pub batch: usize,
    /// V.
    pub views: usize,
    /// D.
    pub dim: usize,
    /// K, queue keys.
    pub queue: usize,
    /// n, anchors (V·B or B).
    pub anchors: usize,
    /// M = V·B + K, contrast rows.
    pub contrast: usize,
    /// V·B: contrast rows that are features (and receive a gradient).
    pub feature_rows: usize,
}

impl Problem {
    /// Checks the sizes against the kernels' limits: D ≤ [`MAX_DIM`], rows ≤ [`MAX_ROWS`].
    pub fn new(
        batch: usize,
        views: usize,
        dim: usize,
        queue: usize,
        mode: ContrastMode,
    ) -> Result<Self, LossError> {
        if dim == 0 || batch == 0 || views == 0 {
            return Err(LossError::EmptyAxis {
                what: "features",
                axis: if batch == 0 {
                    "batch"
                } else if views == 0 {
                    "views"
                } else {
                    "dim"
                },
                shape: vec![batch, views, dim],
            });
        }
        if dim > MAX_DIM {
            return Err(LossError::ShapeMismatch {
                what: "features dim (CUDA backend)",
                expected: format!("at most {MAX_DIM}"),
                actual: format!("{dim} (features shape {:?})", [batch, views, dim]),
            });
        }
        let feature_rows = batch
            .checked_mul(views)
            .filter(|&r| r <= MAX_ROWS)
            .ok_or_else(|| LossError::ShapeMismatch {
                what: "batch · views (CUDA backend)",
                expected: format!("at most {MAX_ROWS} rows"),
                actual: format!("{batch} · {views}"),
            })?;
        let contrast = feature_rows
            .checked_add(queue)
            .filter(|&r| r <= MAX_ROWS)
            .ok_or_else(|| LossError::ShapeMismatch {
                what: "contrast rows batch · views + queue keys (CUDA backend)",
                expected: format!("at most {MAX_ROWS}"),
                actual: format!("{feature_rows} + {queue}"),
            })?;
        let anchors = match mode {
            ContrastMode::All => feature_rows,
            ContrastMode::One => batch,
        };
        Ok(Self {
            batch,
            views,
            dim,
            queue,
            anchors,
            contrast,
            feature_rows,
        })
    }

    /// ⌈D / DS⌉: column slices of the backward passes.
    pub fn dim_slices(&self) -> usize {
        self.dim.div_ceil(DS)
    }

    /// The forward pass: one block per BM anchors.
    pub fn forward(&self) -> Result<LaunchDims, LossError> {
        dims((self.anchors.div_ceil(BM), 1), THREADS)
    }

    /// ∂L/∂a: one block per (BM anchors, DS columns).
    pub fn grad_anchor(&self) -> Result<LaunchDims, LossError> {
        dims((self.anchors.div_ceil(BM), self.dim_slices()), THREADS)
    }

    /// ∂L/∂c: one block per (BM feature rows, DS columns); queue rows get no gradient.
    pub fn grad_contrast(&self) -> Result<LaunchDims, LossError> {
        dims((self.feature_rows.div_ceil(BM), self.dim_slices()), THREADS)
    }

    /// The tiled kernel `kernel`'s launch.
    pub fn tile_launch(&self, kernel: TileKernel) -> Result<LaunchDims, LossError> {
        match kernel {
            TileKernel::Forward => self.forward(),
            TileKernel::GradAnchor => self.grad_anchor(),
            TileKernel::GradContrast => self.grad_contrast(),
        }
    }

    /// A row-wise kernel over `rows` rows (gather, finalize): one warp per row.
    pub fn rows(&self, rows: usize) -> Result<LaunchDims, LossError> {
        dims((rows.div_ceil(ROW_WARPS).max(1), 1), ROW_WARPS * 32)
    }

    /// The class-sum kernel over `classes` classes.
    pub fn class_sums(&self, classes: usize) -> Result<LaunchDims, LossError> {
        dims(
            (classes.max(1), self.dim.div_ceil(CLASS_THREADS)),
            CLASS_THREADS,
        )
    }

    /// Bytes of device memory one evaluation allocates through [`super::CudaBackend`]'s host
    /// path (inputs, intermediates, gradient): O((n + M)·D + classes·D), never n × M.
    pub fn device_bytes(&self, classes: usize, variant_in: bool) -> usize {
        let d = self.dim;
        let class_sums = if variant_in { 2 } else { 2 * classes * d };
        let row_floats = self.feature_rows * d // features
            + self.queue.max(1) * d // keys
            + self.contrast * d // contrast rows
            + self.anchors * d // ∂L/∂a
            + 2 * self.feature_rows * d; // ∂L/∂c, gradient
        let per_row = 3 * self.contrast // inv_norm, cls, perm
            + 5 * self.anchors // npos, gco, lse, lsep, ell
            + classes
            + 1; // seg
        4 * (row_floats + class_sums + per_row) + 8
    }

    /// The single-block loss reduction.
    pub fn sum_terms(&self) -> Result<LaunchDims, LossError> {
        dims((1, 1), SUM_THREADS)
    }
}

/// Dense class ids and the positives they imply, computed on the host from the labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassIndex {
    /// `cls[j]`, j < M: dense class id of contrast row j.
    pub cls: Vec<i32>,
    /// `npos[i]` = |P(i)|, i < n.
    pub npos: Vec<i32>,
    /// Contrast rows sorted by class (stable).
    pub perm: Vec<i32>,
    /// `perm[seg[y] .. seg[y+1]]` are the rows of class y; `seg.len() = classes + 1`.
    pub seg: Vec<i32>,
    /// Number of distinct classes among the contrast rows.
    pub classes: usize,
    /// |I|: anchors with at least one positive.
    pub anchors_with_positives: usize,
}

impl ClassIndex {
    /// The class structure of `problem`'s contrast rows (`j = v·B + b`, then the queue keys).
    ///
    /// With labels, batch and queue labels share one label space, and an unlabeled sample or
    /// key is a class of its own ([`crate::supcon::unlabeled`]). Without labels (SimCLR) row
    /// `j < V·B` has class `j mod B` (its sample) and every queue key a class of its own (a pure
    /// negative; the queue labels are ignored), as in the CPU reference.
    pub fn new(
        problem: &Problem,
        labels: Option<&[i64]>,
        queue_labels: &[i64],
    ) -> Result<Self, LossError> {
        let (batch, m, n) = (problem.batch, problem.contrast, problem.anchors);
        if queue_labels.len() != problem.queue && labels.is_some() {
            return Err(LossError::ShapeMismatch {
                what: "queue labels length",
                expected: format!("{} (the number of queue keys)", problem.queue),
                actual: queue_labels.len().to_string(),
            });
        }
        let mut cls = Vec::with_capacity(m);
        let classes = match labels {
            Some(labels) => {
                if labels.len() != batch {
                    return Err(LossError::ShapeMismatch {
                        what: "labels length",
                        expected: format!("{batch} (the batch size)"),
                        actual: labels.len().to_string(),
                    });
                }
                // Unlabeled samples and keys: a class each (semi-supervised SupCon).
                let (labels, queue_labels) =
                    crate::supcon::unlabeled::own_labels(labels, queue_labels);
                let mut ids = std::collections::HashMap::<i64, i32>::new();
                let mut id_of = |label: i64| -> i32 {
                    let next = ids.len() as i32;
                    *ids.entry(label).or_insert(next)
                };
                for j in 0..problem.feature_rows {
                    cls.push(id_of(labels[j % batch]));
                }
                for &label in queue_labels.iter() {
                    cls.push(id_of(label));
                }
                ids.len()
            }
            None => {
                for j in 0..problem.feature_rows {
                    cls.push((j % batch) as i32);
                }
                for k in 0..problem.queue {
                    cls.push((batch + k) as i32);
                }
                batch + problem.queue
            }
        };
        let mut count = vec![0i32; classes];
        for &y in &cls {
            count[y as usize] += 1;
        }
        let npos: Vec<i32> = cls[..n].iter().map(|&y| count[y as usize] - 1).collect();
        let anchors_with_positives = npos.iter().filter(|&&p| p > 0).count();
        // Counting sort: stable, O(M + classes).
        let mut seg = Vec::with_capacity(classes + 1);
        seg.push(0i32);
        for &c in &count {
            let last = *seg.last().unwrap_or(&0);
            seg.push(last + c);
        }
        let mut next: Vec<i32> = seg[..classes].to_vec();
        let mut perm = vec![0i32; m];
        for (j, &y) in cls.iter().enumerate() {
            let slot = &mut next[y as usize];
            perm[*slot as usize] = j as i32;
            *slot += 1;
        }
        Ok(Self {
            cls,
            npos,
            perm,
            seg,
            classes,
            anchors_with_positives,
        })
    }

    /// The per-anchor G coefficient `(τ/τ_base) / (|I|·τ)` for anchors with a positive, 0 else.
    pub fn gradient_coefficients(&self, coefficient: f32) -> Vec<f32> {
        self.npos
            .iter()
            .map(|&p| if p > 0 { coefficient } else { 0.0 })
            .collect()
    }
}

/// `(τ/τ_base) / (|I|·τ)`: the factor of `(π_ij − w_ij)` in G_ij.
pub fn gradient_coefficient(
    loss_scale: f64,
    temperature: f64,
    anchors_with_positives: usize,
) -> f64 {
    if anchors_with_positives == 0 {
        0.0
    } else {
        loss_scale / (anchors_with_positives as f64 * temperature)
    }
}

/// One kernel argument, as the kernel's C signature takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// A device address (`const float*`, `int*`, `double*`).
    Ptr(u64),
    /// `int`.
    Int(i32),
    /// `float`.
    Float(f32),
}

impl KernelArg {
    /// `'p'`, `'i'` or `'f'`: the kind a C parameter must have (tests compare with the sources).
    pub fn kind(&self) -> char {
        match self {
            KernelArg::Ptr(_) => 'p',
            KernelArg::Int(_) => 'i',
            KernelArg::Float(_) => 'f',
        }
    }
}

/// Device addresses of every buffer of one evaluation (f32 unless said otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffers {
    /// Input features `[B, V, D]`, contiguous.
    pub features: u64,
    /// Input queue keys `[K, D]`, contiguous (unused when K = 0).
    pub keys: u64,
    /// Contrast rows `[M, D]`.
    pub contrast: u64,
    /// 1/‖x‖ per contrast row `[M]`.
    pub inv_norm: u64,
    /// Class id per contrast row `[M]` (i32).
    pub cls: u64,
    /// |P(i)| per anchor `[n]` (i32).
    pub npos: u64,
    /// Contrast rows sorted by class `[M]` (i32).
    pub perm: u64,
    /// Class segments of `perm` `[classes + 1]` (i32).
    pub seg: u64,
    /// S_y `[classes, D]` (L_out).
    pub class_s: u64,
    /// T_y `[classes, D]` (L_out).
    pub class_t: u64,
    /// LSE_i `[n]`.
    pub lse: u64,
    /// LSEP_i `[n]`.
    pub lsep: u64,
    /// ℓ_i `[n]`.
    pub ell: u64,
    /// G coefficient per anchor `[n]`.
    pub gco: u64,
    /// ∂L/∂a `[n, D]`.
    pub grad_anchor: u64,
    /// ∂L/∂c `[V·B, D]`.
    pub grad_contrast: u64,
    /// Output ∂L/∂features `[B, V, D]`.
    pub grad: u64,
    /// Σ ℓ_i `[1]` (f64).
    pub loss_sum: u64,
}

/// The scalars of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scalars {
    /// 1/τ.
    pub inv_tau: f32,
    /// `(τ/τ_base)/(|I|·τ)`.
    pub coef: f32,
    /// L_in (else L_out).
    pub variant_in: bool,
    /// L2-normalize rows.
    pub normalize: bool,
    /// Distinct classes among the contrast rows.
    pub classes: usize,
}

impl Scalars {
    /// The scalars of `options` for the class structure `index`.
    pub fn new(options: &crate::SupConOptions, index: &ClassIndex) -> Self {
        Self {
            inv_tau: (1.0 / options.temperature) as f32,
            coef: gradient_coefficient(
                options.loss_scale(),
                options.temperature,
                index.anchors_with_positives,
            ) as f32,
            variant_in: options.variant == crate::Variant::In,
            normalize: options.normalize,
            classes: index.classes,
        }
    }

    /// Elements of each class-sum buffer (S, T): classes·D for L_out; L_in reads none (1).
    pub fn class_sum_len(&self, dim: usize) -> usize {
        if self.variant_in {
            1
        } else {
            self.classes * dim
        }
    }
}

/// One kernel launch: entry point, dimensions, arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The `extern "C"` entry point.
    pub entry: String,
    /// Grid and block.
    pub dims: LaunchDims,
    /// Arguments in the order of the C signature.
    pub args: Vec<KernelArg>,
}

fn int(value: usize, what: &str) -> Result<KernelArg, LossError> {
    i32::try_from(value)
        .map(KernelArg::Int)
        .map_err(|_| LossError::Backend(format!("CUDA launch: {what} = {value} exceeds i32")))
}

/// Step 1 of [`schedule`]: the features `[B, V, D]` into the contrast rows (view-major), then
/// the queue keys after them, L2-normalized when asked (1/‖x‖ kept).
fn gather_launches(
    p: &Problem,
    buf: &Buffers,
    normalize: KernelArg,
) -> Result<Vec<Launch>, LossError> {
    use KernelArg::Ptr;
    let d = int(p.dim, "dim")?;
    let f32_bytes = F32 as u64;
    let mut out = vec![Launch {
        entry: "supcon_gather_rows".into(),
        dims: p.rows(p.feature_rows)?,
        args: vec![
            Ptr(buf.features),
            int(p.batch, "batch")?,
            int(p.views, "views")?,
            d,
            normalize,
            Ptr(buf.contrast),
            Ptr(buf.inv_norm),
        ],
    }];
    if p.queue > 0 {
        // The keys as a [K, 1, D] batch, written after the V·B feature rows.
        let offset = p.feature_rows as u64;
        out.push(Launch {
            entry: "supcon_gather_rows".into(),
            dims: p.rows(p.queue)?,
            args: vec![
                Ptr(buf.keys),
                int(p.queue, "queue keys")?,
                KernelArg::Int(1),
                d,
                normalize,
                Ptr(buf.contrast + offset * p.dim as u64 * f32_bytes),
                Ptr(buf.inv_norm + offset * f32_bytes),
            ],
        });
    }
    Ok(out)
}

/// Every launch of one evaluation, in stream order. The executor (`device.rs`) only walks this
/// list, so the whole orchestration is testable without a GPU.
pub fn schedule(
    problem: &Problem,
    scalars: &Scalars,
    precision: Precision,
    buf: &Buffers,
) -> Result<Vec<Launch>, LossError> {
    use KernelArg::{Float, Ptr};
    let p = problem;
    let b = int(p.batch, "batch")?;
    let v = int(p.views, "views")?;
    let d = int(p.dim, "dim")?;
    let n = int(p.anchors, "anchors")?;
    let m = int(p.contrast, "contrast rows")?;
    let rows = int(p.feature_rows, "feature rows")?;
    let normalize = KernelArg::Int(i32::from(scalars.normalize));
    let variant_in = KernelArg::Int(i32::from(scalars.variant_in));
    let lout = !scalars.variant_in;
    let mut out = gather_launches(p, buf, normalize)?;
    // L_in never reads the class sums: any valid address will do.
    let (class_s, class_t) = if lout {
        (buf.class_s, buf.class_t)
    } else {
        (buf.contrast, buf.contrast)
    };
    let class_sums = |weighted: bool, coef: f32, dst: u64| -> Result<Launch, LossError> {
        Ok(Launch {
            entry: "supcon_class_sums".into(),
            dims: p.class_sums(scalars.classes)?,
            args: vec![
                Ptr(buf.contrast),
                d,
                Ptr(buf.perm),
                Ptr(buf.seg),
                KernelArg::Int(i32::from(weighted)),
                Ptr(buf.npos),
                n,
                Float(coef),
                Ptr(dst),
            ],
        })
    };
    if lout {
        out.push(class_sums(false, 0.0, class_s)?);
    }
    out.push(Launch {
        entry: TileKernel::Forward.entry(precision),
        dims: p.forward()?,
        args: vec![
            Ptr(buf.contrast),
            Ptr(buf.cls),
            Ptr(buf.npos),
            Ptr(class_s),
            n,
            m,
            d,
            Float(scalars.inv_tau),
            variant_in,
            Ptr(buf.lse),
            Ptr(buf.lsep),
            Ptr(buf.ell),
        ],
    });
    out.push(Launch {
        entry: "supcon_sum_terms".into(),
        dims: p.sum_terms()?,
        args: vec![Ptr(buf.ell), n, Ptr(buf.loss_sum)],
    });
    out.push(Launch {
        entry: TileKernel::GradAnchor.entry(precision),
        dims: p.grad_anchor()?,
        args: vec![
            Ptr(buf.contrast),
            Ptr(buf.cls),
            Ptr(buf.lse),
            Ptr(buf.lsep),
            Ptr(buf.gco),
            n,
            m,
            d,
            Float(scalars.inv_tau),
            variant_in,
            Ptr(buf.grad_anchor),
        ],
    });
    out.push(Launch {
        entry: TileKernel::GradContrast.entry(precision),
        dims: p.grad_contrast()?,
        args: vec![
            Ptr(buf.contrast),
            Ptr(buf.cls),
            Ptr(buf.lse),
            Ptr(buf.lsep),
            Ptr(buf.gco),
            n,
            m,
            rows,
            d,
            Float(scalars.inv_tau),
            variant_in,
            Ptr(buf.grad_contrast),
        ],
    });
    if lout {
        out.push(class_sums(true, scalars.coef, class_t)?);
    }
    out.push(Launch {
        entry: "supcon_finalize_grad".into(),
        dims: p.rows(p.feature_rows)?,
        args: vec![
            Ptr(buf.grad_anchor),
            Ptr(buf.grad_contrast),
            Ptr(buf.contrast),
            Ptr(buf.inv_norm),
            Ptr(class_s),
            Ptr(class_t),
            Ptr(buf.cls),
            Ptr(buf.npos),
            n,
            b,
            v,
            d,
            Float(scalars.coef),
            KernelArg::Int(i32::from(lout)),
            normalize,
            Ptr(buf.grad),
        ],
    });
    Ok(out)
}
