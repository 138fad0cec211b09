//! `supcon._native`: the losses of `supcon-loss` on NumPy arrays, for Python (PyO3 + the
//! `numpy` crate, built by maturin; the Python package around it is `python/supcon`).
//!
//! Every function takes float32 or float64 arrays, reads them in place (no copy for any
//! layout: the loss reads through the array's strides), releases the GIL while the loss runs,
//! and returns the loss with its gradient in the input's dtype and shape. Whatever the library
//! rejects (a wrong shape, a NaN and its index, a zero row under `normalize`, an unknown
//! option) is raised as `supcon.SupConError`, a `ValueError`, with the library's message; no
//! input can panic or abort the interpreter.

use ndarray::{Array3, ArrayView3, Axis, Ix2, Ix3, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use supcon_loss::{
    infonce_loss, ContrastMode, CpuBackend, Element, InfoNceInput, InfoNceOptions, LossError,
    LossOutput, Negatives, Queue, SupConInput, SupConOptions, Variant,
};

create_exception!(
    _native,
    SupConError,
    PyValueError,
    "An input or option the loss rejects; the message names the input and, for values, the \
     index of the first bad element."
);

/// The error raised for a library error: its message with its causes, `: `-separated.
fn loss_error(e: &LossError) -> PyErr {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    SupConError::new_err(message)
}

fn bad_input(message: String) -> PyErr {
    SupConError::new_err(message)
}

/// A float array as Python gave it: float32 or float64, any layout, borrowed.
enum Floats<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

impl<'py> Floats<'py> {
    fn extract(array: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'py, f32>>() {
            return Ok(Floats::F32(a));
        }
        if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'py, f64>>() {
            return Ok(Floats::F64(a));
        }
        let what = match array.getattr("dtype") {
            Ok(dtype) => format!("a numpy array of dtype {dtype}"),
            Err(_) => format!("a {}", array.get_type().name()?),
        };
        Err(bad_input(format!(
            "{name}: expected a float32 or float64 numpy array, got {what}"
        )))
    }

    fn ndim(&self) -> usize {
        match self {
            Floats::F32(a) => a.ndim(),
            Floats::F64(a) => a.ndim(),
        }
    }
}

/// Labels as int64 (int32 is widened; any other dtype is an error naming `name`).
fn extract_labels(labels: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<i64>> {
    if let Ok(a) = labels.extract::<PyReadonlyArrayDyn<'_, i64>>() {
        if a.ndim() == 1 {
            return Ok(a.as_array().iter().copied().collect());
        }
    } else if let Ok(a) = labels.extract::<PyReadonlyArrayDyn<'_, i32>>() {
        if a.ndim() == 1 {
            return Ok(a.as_array().iter().map(|&x| i64::from(x)).collect());
        }
    } else {
        return Err(bad_input(format!(
            "{name}: expected a 1-D int64 or int32 numpy array"
        )));
    }
    Err(bad_input(format!(
        "{name}: expected a 1-D array, got {} dimensions",
        labels.getattr("ndim")?
    )))
}

/// `[N, D]` → `[N, 1, D]`; `[B, V, D]` as it is; anything else an error naming `name`.
fn as_views<'a, T>(
    array: ndarray::ArrayView<'a, T, IxDyn>,
    name: &str,
) -> PyResult<ArrayView3<'a, T>> {
    match array.ndim() {
        2 => Ok(array
            .into_dimensionality::<Ix2>()
            .map_err(|e| bad_input(format!("{name}: {e}")))?
            .insert_axis(Axis(1))),
        3 => array
            .into_dimensionality::<Ix3>()
            .map_err(|e| bad_input(format!("{name}: {e}"))),
        n => Err(bad_input(format!(
            "{name}: expected [batch, dim] or [batch, views, dim], got {n} dimensions"
        ))),
    }
}

/// The options of `supcon_loss`, parsed from Python's keywords.
fn supcon_options(
    temperature: f64,
    base_temperature: Option<f64>,
    variant: &str,
    contrast_mode: &str,
    normalize: bool,
) -> PyResult<SupConOptions> {
    let variant = match variant {
        "out" => Variant::Out,
        "in" => Variant::In,
        other => {
            return Err(bad_input(format!(
                "variant: {other:?} is not \"out\" (L_out, the paper's eq. 2) or \"in\" (L_in)"
            )))
        }
    };
    let contrast_mode = match contrast_mode {
        "all" => ContrastMode::All,
        "one" => ContrastMode::One,
        other => {
            return Err(bad_input(format!(
                "contrast_mode: {other:?} is not \"all\" or \"one\""
            )))
        }
    };
    Ok(SupConOptions::new(temperature)
        .with_base_temperature(base_temperature)
        .with_variant(variant)
        .with_contrast_mode(contrast_mode)
        .with_normalize(normalize))
}

/// The options of a SupCon call and its labels (int64), as both entry points read them.
fn options_and_labels(
    (temperature, base_temperature): (f64, Option<f64>),
    (variant, contrast_mode): (&str, &str),
    normalize: bool,
    labels: Option<&Bound<'_, PyAny>>,
) -> PyResult<(SupConOptions, Option<Vec<i64>>)> {
    let options = supcon_options(
        temperature,
        base_temperature,
        variant,
        contrast_mode,
        normalize,
    )?;
    let labels = labels.map(|l| extract_labels(l, "labels")).transpose()?;
    Ok((options, labels))
}

/// What one SupCon call needs besides the features (borrowed across the GIL release).
struct SupConCall<'a> {
    labels: Option<&'a [i64]>,
    queue_labels: Option<&'a [i64]>,
    anchors: Option<(usize, usize)>,
    options: &'a SupConOptions,
}

impl SupConCall<'_> {
    /// The loss on `features` (`[B, V, D]`) with `queue` keys, in `T`.
    fn run<T: Element>(
        &self,
        features: ArrayView3<'_, T>,
        queue: Option<ndarray::ArrayView2<'_, T>>,
    ) -> Result<LossOutput<T>, LossError> {
        let mut input = SupConInput::new(features, self.labels);
        if let (Some(keys), Some(labels)) = (queue, self.queue_labels) {
            input = input.with_queue(Queue { keys, labels });
        }
        let backend = CpuBackend::default();
        match self.anchors {
            Some((start, stop)) => backend.compute_shard(&input, start..stop, self.options),
            None => backend.compute_generic(&input, self.options),
        }
    }
}

/// The gradient as a numpy array of the input's shape (`[N, D]` back from `[N, 1, D]`).
fn gradient_array<'py, T: numpy::Element>(
    py: Python<'py>,
    grad: Array3<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let grad = grad
        .into_shape_with_order(IxDyn(shape))
        .map_err(|e| bad_input(format!("gradient layout: {e}")))?;
    Ok(grad.into_pyarray(py))
}

/// SupCon (Khosla et al. 2020) and SimCLR (no labels), never building the N × N matrix.
///
/// Returns `(loss, grad, anchors)`: the loss, ∂loss/∂features (the features' dtype and
/// shape), and the anchors with at least one positive that the loss averages over (0: the
/// loss and gradient are zero; anchors without a positive are left out, never NaN).
/// `anchors=(start, stop)` computes the share of the samples `start..stop` as anchors against
/// every row (the cross-rank formula: the shares of all ranks add up to the whole loss and
/// gradient).
#[pyfunction]
#[pyo3(name = "supcon_loss", signature = (
    features, labels=None, *, temperature=0.1, base_temperature=None, variant="out",
    contrast_mode="all", normalize=true, queue=None, queue_labels=None, anchors=None
))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments, one per option.
fn supcon_loss_py<'py>(
    py: Python<'py>,
    features: &Bound<'py, PyAny>,
    labels: Option<&Bound<'py, PyAny>>,
    temperature: f64,
    base_temperature: Option<f64>,
    variant: &str,
    contrast_mode: &str,
    normalize: bool,
    queue: Option<&Bound<'py, PyAny>>,
    queue_labels: Option<&Bound<'py, PyAny>>,
    anchors: Option<(usize, usize)>,
) -> PyResult<(f64, Bound<'py, PyAny>, usize)> {
    let (options, labels) = options_and_labels(
        (temperature, base_temperature),
        (variant, contrast_mode),
        normalize,
        labels,
    )?;
    let queue_labels = queue_labels
        .map(|l| extract_labels(l, "queue_labels"))
        .transpose()?;
    if queue.is_some() != queue_labels.is_some() {
        return Err(bad_input(
            "queue and queue_labels come together: the keys [K, dim] and their labels [K]".into(),
        ));
    }
    let call = SupConCall {
        labels: labels.as_deref(),
        queue_labels: queue_labels.as_deref(),
        anchors,
        options: &options,
    };
    let floats = Floats::extract(features, "features")?;
    let queue = queue.map(|q| Floats::extract(q, "queue")).transpose()?;
    let shape: Vec<usize> = match &floats {
        Floats::F32(a) => a.shape().to_vec(),
        Floats::F64(a) => a.shape().to_vec(),
    };
    if let Some(q) = &queue {
        if q.ndim() != 2 {
            return Err(bad_input(format!(
                "queue: expected [K, dim], got {} dimensions",
                q.ndim()
            )));
        }
    }
    match (&floats, &queue) {
        (Floats::F32(f), None) => supcon_in(py, &call, f, None, &shape),
        (Floats::F32(f), Some(Floats::F32(q))) => supcon_in(py, &call, f, Some(q), &shape),
        (Floats::F64(f), None) => supcon_in(py, &call, f, None, &shape),
        (Floats::F64(f), Some(Floats::F64(q))) => supcon_in(py, &call, f, Some(q), &shape),
        _ => Err(bad_input(
            "queue: its dtype must be the features' (float32 or float64)".into(),
        )),
    }
}

/// [`supcon_loss_py`] in one float type: the loss with the GIL released, and the gradient as
/// an array of the features' `shape`.
fn supcon_in<'py, T: Element + numpy::Element>(
    py: Python<'py>,
    call: &SupConCall<'_>,
    features: &PyReadonlyArrayDyn<'py, T>,
    queue: Option<&PyReadonlyArrayDyn<'py, T>>,
    shape: &[usize],
) -> PyResult<(f64, Bound<'py, PyAny>, usize)> {
    let features = as_views(features.as_array(), "features")?;
    let queue = queue.map(|q| two_d(q.as_array(), "queue")).transpose()?;
    let out = py
        .detach(|| call.run(features, queue))
        .map_err(|e| loss_error(&e))?;
    let grad = gradient_array(py, out.grad, shape)?.into_any();
    Ok((out.loss, grad, out.anchors))
}

fn two_d<'a, T>(
    array: ndarray::ArrayView<'a, T, IxDyn>,
    name: &str,
) -> PyResult<ndarray::ArrayView2<'a, T>> {
    array
        .into_dimensionality::<Ix2>()
        .map_err(|_| bad_input(format!("{name}: expected a 2-D array")))
}

/// InfoNCE (MoCo): each query against its positive and the negatives — `[K, dim]` shared by
/// every query (a queue) or `[B, m, dim]` of its own. Returns `(loss, grad)`, the gradient
/// with respect to the queries (positives and negatives are constants, as in MoCo).
#[pyfunction]
#[pyo3(signature = (queries, positives, negatives, *, temperature=0.07, normalize=true))]
fn infonce<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    positives: &Bound<'py, PyAny>,
    negatives: &Bound<'py, PyAny>,
    temperature: f64,
    normalize: bool,
) -> PyResult<(f64, Bound<'py, PyAny>)> {
    let options = InfoNceOptions::new(temperature).with_normalize(normalize);
    let (q, k, n) = (
        Floats::extract(queries, "queries")?,
        Floats::extract(positives, "positives")?,
        Floats::extract(negatives, "negatives")?,
    );
    match (&q, &k, &n) {
        (Floats::F32(q), Floats::F32(k), Floats::F32(n)) => {
            let (loss, grad) = infonce_in(py, q.as_array(), k.as_array(), n.as_array(), &options)?;
            Ok((loss, grad.into_pyarray(py).into_any()))
        }
        (Floats::F64(q), Floats::F64(k), Floats::F64(n)) => {
            let (loss, grad) = infonce_in(py, q.as_array(), k.as_array(), n.as_array(), &options)?;
            Ok((loss, grad.into_pyarray(py).into_any()))
        }
        _ => Err(bad_input(
            "queries, positives and negatives must share one dtype (float32 or float64)".into(),
        )),
    }
}

fn infonce_in<T: Element>(
    py: Python<'_>,
    queries: ndarray::ArrayViewD<'_, T>,
    positives: ndarray::ArrayViewD<'_, T>,
    negatives: ndarray::ArrayViewD<'_, T>,
    options: &InfoNceOptions,
) -> PyResult<(f64, ndarray::Array2<T>)> {
    let queries = two_d(queries, "queries")?;
    let positives = two_d(positives, "positives")?;
    let negatives = match negatives.ndim() {
        2 => Negatives::Shared(two_d(negatives, "negatives")?),
        3 => Negatives::PerQuery(
            negatives
                .into_dimensionality::<Ix3>()
                .map_err(|e| bad_input(format!("negatives: {e}")))?,
        ),
        n => {
            return Err(bad_input(format!(
                "negatives: expected [K, dim] or [batch, m, dim], got {n} dimensions"
            )))
        }
    };
    let input = InfoNceInput::new(queries, positives, negatives);
    let out = py
        .detach(|| infonce_loss(&input, options))
        .map_err(|e| loss_error(&e))?;
    Ok((out.loss, out.grad))
}

/// SupCon of float32 features already on a CUDA device, by address (the private half of
/// `supcon.torch`'s CUDA path, which passes a contiguous tensor's `data_ptr()` and a zeroed
/// or empty gradient tensor's, after checking them on the device). The fused kernels read
/// and write that memory in place; the GIL is released while they run. Returns
/// `(loss, anchors)`. Raises `SupConError` when the package was built without the `cuda`
/// feature or no CUDA driver and NVRTC are found.
///
/// Addresses are trusted: this is not a public entry point (a wrong one is a wrong memory
/// access on the device, as with any `data_ptr()`).
#[pyfunction]
#[pyo3(name = "_supcon_loss_cuda", signature = (
    features, shape, grad, device, labels=None, *, temperature=0.1, base_temperature=None,
    variant="out", contrast_mode="all", normalize=true
))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments, one per option.
fn supcon_loss_cuda<'py>(
    py: Python<'py>,
    features: u64,
    shape: (usize, usize, usize),
    grad: u64,
    device: usize,
    labels: Option<&Bound<'py, PyAny>>,
    temperature: f64,
    base_temperature: Option<f64>,
    variant: &str,
    contrast_mode: &str,
    normalize: bool,
) -> PyResult<(f64, usize)> {
    let (options, labels) = options_and_labels(
        (temperature, base_temperature),
        (variant, contrast_mode),
        normalize,
        labels,
    )?;
    let backend = supcon_loss::cuda::shared_backend(device, supcon_loss::cuda::Precision::F32)
        .map_err(|e| loss_error(&e))?;
    let (batch, views, dim) = shape;
    py.detach(|| {
        // SAFETY: supcon.torch passes the addresses of live, contiguous float32 tensors of
        // `shape` on `device` (features and gradient), held until this call returns, after
        // synchronizing any non-default PyTorch stream (see CudaBackend::compute_device).
        let buffers = supcon_loss::cuda::DeviceBuffers {
            features,
            shape: [batch, views, dim],
            labels: labels.as_deref(),
            queue: None,
            grad,
        };
        unsafe { backend.compute_device(buffers, &options) }
    })
    .map_err(|e| loss_error(&e))
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SupConError", m.py().get_type::<SupConError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(supcon_loss_py, m)?)?;
    m.add_function(wrap_pyfunction!(infonce, m)?)?;
    m.add_function(wrap_pyfunction!(supcon_loss_cuda, m)?)?;
    // Whether the fused CUDA kernels were compiled in (the `cuda` feature, on by default);
    // a device and NVRTC are still needed at run time.
    m.add("CUDA", cfg!(feature = "cuda"))?;
    Ok(())
}
