//! Every loss of this crate on `.npy` files (feature `npy`): the one reader and writer behind
//! the `loss_npy` example and the `supcon loss` command, so that a user can check our numbers
//! against their own implementation.
//!
//! Inputs may be float32 or float64; each loss runs in the type of its main input (the
//! features, or the queries) and writes its gradients in that type, with the input's shape.
//! Labels may be int64 or int32. [`Summary::json`] is the one-line JSON both tools print.

use std::path::{Path, PathBuf};

use ndarray::{Array, Array1, Dimension, Ix2, Ix3, Ix4};
use ndarray_npy::{read_npy, write_npy, ReadNpyError, WritableElement, WriteNpyError};

use crate::{
    cmc_loss, cpc_loss, infonce_loss, invspread_loss, nce_loss, swav_generic, CmcOptions,
    CpcOptions, CpuBackend, Element, InfoNceInput, InfoNceOptions, InvSpreadOptions, LossError,
    NceInput, NceOptions, Negatives, Queue, SupConBackend, SupConInput, SupConOptions, SwavInput,
    SwavOptions,
};

/// Why a loss on files failed: a file that does not hold the array it should, a gradient that
/// could not be written, or the loss's own typed error.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum NpyLossError {
    /// A `.npy` file could not be read as the array the loss needs.
    #[error("{what} {}: not {expected} .npy file", path.display())]
    Read {
        /// E.g. `"features"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// E.g. `"a [batch, views, dim] float32 or float64"`.
        expected: &'static str,
        /// ndarray-npy's reason.
        #[source]
        source: ReadNpyError,
    },
    /// A `.npy` file is not a regular file, or its header declares more than the file holds
    /// (checked before anything is allocated: the header is input too).
    #[error("{what} {}: {reason}", path.display())]
    Bounds {
        /// E.g. `"features"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The declared size, what the file holds, or the limit crossed.
        reason: String,
    },
    /// A gradient file could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// ndarray-npy's reason.
        #[source]
        source: WriteNpyError,
    },
    /// The loss rejected its inputs or failed.
    #[error(transparent)]
    Loss(#[from] LossError),
}

/// What a loss on files prints: the loss and the number of anchors it averages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The loss.
    pub loss: f64,
    /// The anchors (queries, or image × assignment crop pairs) it averages over.
    pub anchors: usize,
}

impl Summary {
    /// `{"loss": <f64>, "anchors": <int>}` (the loss printed exactly).
    pub fn json(&self) -> String {
        format!(
            "{{\"loss\": {:?}, \"anchors\": {}}}",
            self.loss, self.anchors
        )
    }
}

/// A float array as its file holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum Floats<D: Dimension> {
    /// A float32 file.
    F32(Array<f32, D>),
    /// A float64 file.
    F64(Array<f64, D>),
}

impl<D: Dimension> Floats<D> {
    /// The array in `T` (converted when the file holds the other float type).
    pub fn to<T: Element>(&self) -> Array<T, D> {
        match self {
            Floats::F32(a) => a.mapv(|x| T::from_f64(f64::from(x))),
            Floats::F64(a) => a.mapv(T::from_f64),
        }
    }

    /// Whether the file holds float64.
    pub fn is_f64(&self) -> bool {
        matches!(self, Floats::F64(_))
    }
}

/// The longest `.npy` header read (numpy writes about 128 bytes; the format allows 4 GiB).
pub const MAX_NPY_HEADER_BYTES: usize = 1 << 16;

/// The smallest element this module reads (float32, int32): a header's shape times it must fit
/// in the bytes after the header.
const SMALLEST_ELEMENT_BYTES: u64 = 4;

/// Checks a `.npy` file before `ndarray-npy` allocates what its header declares: a regular
/// file, a header of at most [`MAX_NPY_HEADER_BYTES`], and a shape whose elements fit in the
/// bytes the file holds. A file too short or malformed to tell is left to `ndarray-npy`, whose
/// error says what is wrong.
fn check_declared_size(path: &Path, what: &'static str) -> Result<(), NpyLossError> {
    use std::io::{Read, Seek};
    let bounds = |reason: String| NpyLossError::Bounds {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if !meta.is_file() {
        return Err(bounds("is not a regular file".into()));
    }
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(());
    };
    let mut preamble = [0u8; 12];
    if file.read_exact(&mut preamble).is_err() || &preamble[..6] != b"\x93NUMPY" {
        return Ok(());
    }
    let (header_len, preamble_len) = match preamble[6] {
        1 => (
            u64::from(u16::from_le_bytes([preamble[8], preamble[9]])),
            10,
        ),
        _ => (
            u64::from(u32::from_le_bytes([
                preamble[8],
                preamble[9],
                preamble[10],
                preamble[11],
            ])),
            12,
        ),
    };
    if header_len > MAX_NPY_HEADER_BYTES as u64 {
        return Err(bounds(format!(
            "declares a header of {header_len} bytes, above the limit of {MAX_NPY_HEADER_BYTES}"
        )));
    }
    // The header again, from the start, now that its length is known to be small.
    if file.rewind().is_err() {
        return Ok(());
    }
    let Ok(header) = ndarray_npy::npy::header::Header::from_reader(&mut file) else {
        return Ok(());
    };
    let data_bytes = meta.len().saturating_sub(preamble_len + header_len);
    let elements = header
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    match elements.and_then(|n| n.checked_mul(SMALLEST_ELEMENT_BYTES)) {
        Some(bytes) if bytes <= data_bytes => Ok(()),
        _ => Err(bounds(format!(
            "its header declares shape {:?}, more elements than the {data_bytes} bytes after \
             the header hold (a truncated or forged file)",
            header.shape
        ))),
    }
}

/// Reads a float32 or float64 array of `D` dimensions; `what` and `expected` name it in errors.
pub fn read_floats<D: Dimension>(
    path: &Path,
    what: &'static str,
    expected: &'static str,
) -> Result<Floats<D>, NpyLossError> {
    check_declared_size(path, what)?;
    let failed = |source| NpyLossError::Read {
        what,
        path: path.to_path_buf(),
        expected,
        source,
    };
    match read_npy::<_, Array<f32, D>>(path) {
        Ok(array) => Ok(Floats::F32(array)),
        Err(ReadNpyError::WrongDescriptor(_)) => read_npy::<_, Array<f64, D>>(path)
            .map(Floats::F64)
            .map_err(failed),
        Err(e) => Err(failed(e)),
    }
}

/// Reads a 1-D int64 or int32 array of labels.
pub fn read_labels(path: &Path, what: &'static str) -> Result<Vec<i64>, NpyLossError> {
    check_declared_size(path, what)?;
    let failed = |source| NpyLossError::Read {
        what,
        path: path.to_path_buf(),
        expected: "a 1-D int64 or int32",
        source,
    };
    match read_npy::<_, Array1<i64>>(path) {
        Ok(labels) => Ok(labels.to_vec()),
        Err(ReadNpyError::WrongDescriptor(_)) => read_npy::<_, Array1<i32>>(path)
            .map(|l| l.iter().map(|&x| i64::from(x)).collect())
            .map_err(failed),
        Err(e) => Err(failed(e)),
    }
}

/// Writes `array` to `path` (`.npy`, its element type).
pub fn write_array<T: WritableElement, D: Dimension>(
    path: &Path,
    array: &Array<T, D>,
) -> Result<(), NpyLossError> {
    write_npy(path, array).map_err(|source| NpyLossError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `compute` in the file's float type: f64 files in f64, f32 files in f32.
macro_rules! in_file_type {
    ($floats:expr, |$t:ident| $body:expr) => {
        if $floats.is_f64() {
            type $t = f64;
            $body
        } else {
            type $t = f32;
            $body
        }
    };
}

/// The SupCon / SimCLR loss of the files: features `[batch, views, dim]`, labels `[batch]`
/// (none: SimCLR), a queue `keys [K, dim]` with its labels. f64 features run in f64 on the CPU
/// backend; otherwise on `backend` in f32. `grad_out` receives ∂loss/∂features.
pub fn supcon_files(
    features: &Path,
    labels: Option<&Path>,
    queue: Option<(&Path, Option<&Path>)>,
    options: &SupConOptions,
    backend: &dyn SupConBackend,
    grad_out: Option<&Path>,
) -> Result<Summary, NpyLossError> {
    let features = read_floats::<Ix3>(
        features,
        "features",
        "a [batch, views, dim] float32 or float64",
    )?;
    let labels = labels.map(|p| read_labels(p, "labels")).transpose()?;
    let queue = match queue {
        Some((keys, key_labels)) => Some((
            read_floats::<Ix2>(keys, "queue keys", "a [K, dim] float32 or float64")?,
            key_labels
                .map(|p| read_labels(p, "queue labels"))
                .transpose()?,
        )),
        None => None,
    };
    if features.is_f64() {
        let x = features.to::<f64>();
        let keys = queue.as_ref().map(|(k, _)| k.to::<f64>());
        let input = supcon_input(&x, labels.as_deref(), keys.as_ref(), &queue);
        let out = CpuBackend::default().compute_generic(&input, options)?;
        finish(out.loss, out.anchors, &out.grad, grad_out)
    } else {
        let x = features.to::<f32>();
        let keys = queue.as_ref().map(|(k, _)| k.to::<f32>());
        let input = supcon_input(&x, labels.as_deref(), keys.as_ref(), &queue);
        let out = backend.compute(&input, options)?;
        finish(out.loss, out.anchors, &out.grad, grad_out)
    }
}

fn supcon_input<'a, T>(
    features: &'a Array<T, Ix3>,
    labels: Option<&'a [i64]>,
    keys: Option<&'a Array<T, Ix2>>,
    queue: &'a Option<(Floats<Ix2>, Option<Vec<i64>>)>,
) -> SupConInput<'a, T> {
    let mut input = SupConInput::new(features.view(), labels);
    if let Some(keys) = keys {
        let key_labels = queue
            .as_ref()
            .and_then(|(_, l)| l.as_deref())
            .unwrap_or(&[]);
        input = input.with_queue(Queue {
            keys: keys.view(),
            labels: key_labels,
        });
    }
    input
}

fn finish<T: WritableElement, D: Dimension>(
    loss: f64,
    anchors: usize,
    grad: &Array<T, D>,
    grad_out: Option<&Path>,
) -> Result<Summary, NpyLossError> {
    if let Some(path) = grad_out {
        write_array(path, grad)?;
    }
    Ok(Summary { loss, anchors })
}

/// Negatives of InfoNCE / NCE as their file holds them: shared `[K, D]` or per query
/// `[B, m, D]`.
enum NegativeFile {
    Shared(Floats<Ix2>),
    PerQuery(Floats<Ix3>),
}

fn read_negatives(path: &Path) -> Result<NegativeFile, NpyLossError> {
    const EXPECTED: &str = "a [K, dim] (shared) or [batch, m, dim] (per query) float32 or float64";
    match read_floats::<Ix2>(path, "negatives", EXPECTED) {
        Ok(shared) => Ok(NegativeFile::Shared(shared)),
        Err(NpyLossError::Read {
            source: ReadNpyError::WrongNdim(..),
            ..
        }) => read_floats::<Ix3>(path, "negatives", EXPECTED).map(NegativeFile::PerQuery),
        Err(e) => Err(e),
    }
}

/// Reads the queries `[B, D]` and positives `[B, D]` of InfoNCE / NCE.
fn read_pairs(
    queries: &Path,
    positives: &Path,
) -> Result<(Floats<Ix2>, Floats<Ix2>), NpyLossError> {
    Ok((
        read_floats(queries, "queries", "a [batch, dim] float32 or float64")?,
        read_floats(positives, "positives", "a [batch, dim] float32 or float64")?,
    ))
}

/// MoCo's InfoNCE on files: queries `[B, D]`, positives `[B, D]`, negatives `[K, D]` shared or
/// `[B, m, D]` per query. `grad_out` receives ∂loss/∂queries.
pub fn infonce_files(
    queries: &Path,
    positives: &Path,
    negatives: &Path,
    options: &InfoNceOptions,
    grad_out: Option<&Path>,
) -> Result<Summary, NpyLossError> {
    let (q, k) = read_pairs(queries, positives)?;
    let n = read_negatives(negatives)?;
    in_file_type!(q, |T| {
        let (q, k) = (q.to::<T>(), k.to::<T>());
        let out = match &n {
            NegativeFile::Shared(n) => {
                let n = n.to::<T>();
                infonce_loss(
                    &InfoNceInput::new(q.view(), k.view(), Negatives::Shared(n.view())),
                    options,
                )?
            }
            NegativeFile::PerQuery(n) => {
                let n = n.to::<T>();
                infonce_loss(
                    &InfoNceInput::new(q.view(), k.view(), Negatives::PerQuery(n.view())),
                    options,
                )?
            }
        };
        finish(out.loss, q.nrows(), &out.grad, grad_out)
    })
}

/// InstDisc's NCE on files: queries `[B, D]`, positives `[B, D]`, negatives `[B, m, D]` (or
/// `[m, D]`, the same for every query). `grad_out` receives ∂loss/∂queries.
pub fn nce_files(
    queries: &Path,
    positives: &Path,
    negatives: &Path,
    options: &NceOptions,
    grad_out: Option<&Path>,
) -> Result<Summary, NpyLossError> {
    let (q, k) = read_pairs(queries, positives)?;
    let n = read_negatives(negatives)?;
    in_file_type!(q, |T| {
        let (q, k) = (q.to::<T>(), k.to::<T>());
        let n = match &n {
            NegativeFile::PerQuery(n) => n.to::<T>(),
            NegativeFile::Shared(n) => {
                let shared = n.to::<T>();
                let (m, d) = shared.dim();
                shared
                    .broadcast((q.nrows(), m, d))
                    .expect("a [m, dim] array broadcasts to [batch, m, dim]")
                    .to_owned()
            }
        };
        let out = nce_loss(&NceInput::new(q.view(), k.view(), n.view()), options)?;
        finish(out.loss, q.nrows(), &out.grad, grad_out)
    })
}

/// SwAV on files: features `[B, S, D]`, prototypes `[K, D]`. `grad_out` receives
/// ∂loss/∂features and `prototype_grad_out` ∂loss/∂prototypes.
pub fn swav_files(
    features: &Path,
    prototypes: &Path,
    options: &SwavOptions,
    grad_out: Option<&Path>,
    prototype_grad_out: Option<&Path>,
) -> Result<Summary, NpyLossError> {
    let z = read_floats::<Ix3>(
        features,
        "features",
        "a [batch, crops, dim] float32 or float64",
    )?;
    let c = read_floats::<Ix2>(prototypes, "prototypes", "a [K, dim] float32 or float64")?;
    in_file_type!(z, |T| {
        let (z, c) = (z.to::<T>(), c.to::<T>());
        let out = swav_generic(&SwavInput::new(z.view(), c.view()), options)?;
        if let Some(path) = prototype_grad_out {
            write_array(path, &out.grad_prototypes)?;
        }
        finish(out.loss, out.anchors, &out.grad_features, grad_out)
    })
}

/// CMC on files: views `[V, B, D]` (each view's embeddings of the same B scenes). `grad_out`
/// receives ∂loss/∂views; the summary's anchors are the contrasted view pairs × scenes.
pub fn cmc_files(
    views: &Path,
    options: &CmcOptions,
    grad_out: Option<&Path>,
) -> Result<Summary, NpyLossError> {
    let views = read_floats::<Ix3>(views, "views", "a [views, batch, dim] float32 or float64")?;
    in_file_type!(views, |T| {
        let views = views.to::<T>();
        let out = cmc_loss(views.view(), options)?;
        finish(out.loss, out.pairs * views.dim().1, &out.grad, grad_out)
    })
}

/// InvSpread on files: features `[B, 2, D]` (each image and its augmented copy). `grad_out`
/// receives ∂loss/∂features; the summary's anchors are the 2B rows.
pub fn invspread_files(
    features: &Path,
    options: &InvSpreadOptions,
    grad_out: Option<&Path>,
) -> Result<Summary, NpyLossError> {
    let features =
        read_floats::<Ix3>(features, "features", "a [batch, 2, dim] float32 or float64")?;
    in_file_type!(features, |T| {
        let features = features.to::<T>();
        let out = invspread_loss(features.view(), options)?;
        finish(out.loss, 2 * features.dim().0, &out.grad, grad_out)
    })
}

/// CPC on files: predictions `[B, T, K, D]` and targets `[B, T, D]`. `grad_out` receives
/// ∂loss/∂predictions and `target_grad_out` ∂loss/∂targets; the summary's anchors are the
/// valid predictions.
pub fn cpc_files(
    predictions: &Path,
    targets: &Path,
    options: &CpcOptions,
    grad_out: Option<&Path>,
    target_grad_out: Option<&Path>,
) -> Result<Summary, NpyLossError> {
    let p = read_floats::<Ix4>(
        predictions,
        "predictions",
        "a [batch, positions, offsets, dim] float32 or float64",
    )?;
    let z = read_floats::<Ix3>(
        targets,
        "targets",
        "a [batch, positions, dim] float32 or float64",
    )?;
    in_file_type!(p, |T| {
        let (p, z) = (p.to::<T>(), z.to::<T>());
        let out = cpc_loss(p.view(), z.view(), options)?;
        if let Some(path) = target_grad_out {
            write_array(path, &out.grad_targets)?;
        }
        finish(out.loss, out.predictions, &out.grad_predictions, grad_out)
    })
}
