//! The CUDA executor: NVRTC compilation, module loading, buffers, and the launches of
//! [`plan::schedule`] on the context's legacy default stream.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig};
use cudarc::driver::{DeviceRepr, PushKernelArg, ValidAsZeroBits};
use cudarc::nvrtc::Ptx;
use ndarray::Array3;

use super::kernels;
use super::plan::{self, Buffers, ClassIndex, KernelArg, Precision, Problem, Scalars};
use super::DeviceBuffers;
use crate::{validate, LossError, LossOutput, SupConBackend, SupConInput, SupConOptions};

/// The output of one NVRTC compilation.
#[derive(Clone, Debug)]
pub struct NvrtcOutput {
    /// The PTX text.
    pub ptx: String,
    /// NVRTC's log (warnings; with `--ptxas-options=-v` and an `sm_XX` target, ptxas's
    /// register and shared-memory report).
    pub log: String,
}

/// Compiles one CUDA C source with NVRTC. `options` are NVRTC's (`--gpu-architecture=compute_90`,
/// `--ptxas-options=-v`, ...). Fails with [`LossError::CudaUnavailable`](crate::LossError::CudaUnavailable) when NVRTC cannot be
/// loaded (checked first: cudarc would panic) and [`LossError::Backend`] with the log when the
/// source does not compile.
pub fn nvrtc_compile(
    source: &str,
    name: &str,
    options: &[String],
) -> Result<NvrtcOutput, LossError> {
    use cudarc::nvrtc::result;
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(LossError::CudaUnavailable(
            "NVRTC (libnvrtc.so.13) not found on the library path: put CUDA 13's lib folder \
             (e.g. the pip package nvidia-cuda-nvrtc's nvidia/cu13/lib) on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let src = CString::new(source)
        .map_err(|e| LossError::Backend(format!("kernel source {name} has a NUL byte: {e}")))?;
    let cname = CString::new(name)
        .map_err(|e| LossError::Backend(format!("kernel name {name:?} has a NUL byte: {e}")))?;
    let prog = result::create_program(&src, Some(&cname))
        .map_err(|e| LossError::Backend(format!("NVRTC create program {name}: {e:?}")))?;
    // SAFETY: `prog` is a live program; the options are plain strings.
    let compiled = unsafe { result::compile_program(prog, options) };
    // SAFETY: `prog` is live until `destroy_program` below.
    let log = unsafe { result::get_program_log(prog) }
        .map(|raw| c_chars_to_string(&raw))
        .unwrap_or_default();
    let ptx = match compiled {
        // SAFETY: the program compiled.
        Ok(()) => unsafe { result::get_ptx(prog) }
            .map(|raw| c_chars_to_string(&raw))
            .map_err(|e| LossError::Backend(format!("NVRTC get PTX of {name}: {e:?}"))),
        Err(e) => Err(LossError::Backend(format!(
            "NVRTC could not compile {name} with {options:?}: {e:?}\n{log}"
        ))),
    };
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(prog) };
    Ok(NvrtcOutput { ptx: ptx?, log })
}

fn c_chars_to_string(raw: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .map(|&c| c as u8)
        .take_while(|&c| c != 0)
        .collect();
    CStr::from_bytes_until_nul(&[bytes.as_slice(), &[0]].concat())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn driver(what: &str) -> impl Fn(cudarc::driver::DriverError) -> LossError + '_ {
    move |e| LossError::library(format!("CUDA {what}"), e)
}

/// The fused CUDA backend (see the [module docs](super)).
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    precision: Precision,
    arch: String,
    capability: (i32, i32),
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("ordinal", &self.ctx.ordinal())
            .field("capability", &self.capability)
            .field("arch", &self.arch)
            .field("precision", &self.precision)
            .finish()
    }
}

impl CudaBackend {
    /// The backend on device `ordinal`, kernels compiled for the device's own architecture
    /// (`compute_90` on an H100). Fails with [`LossError::CudaUnavailable`](crate::LossError::CudaUnavailable) when the driver
    /// library, NVRTC or the device is missing.
    pub fn new(ordinal: usize) -> Result<Self, LossError> {
        Self::build(ordinal, None)
    }

    /// The backend with an explicit NVRTC target (`"compute_90"`, `"sm_90"`, `"compute_80"`).
    pub fn with_arch(ordinal: usize, arch: &str) -> Result<Self, LossError> {
        Self::build(ordinal, Some(arch))
    }

    /// The same backend with another matrix precision ([`Precision::Tf32`] needs sm_80+).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    /// The matrix precision of the tiled passes.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The NVRTC target the kernels were compiled for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The device's compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.capability
    }

    /// The device's name (e.g. "NVIDIA H100 80GB HBM3").
    pub fn device_name(&self) -> Result<String, LossError> {
        self.ctx.name().map_err(driver("device name"))
    }

    /// The cudarc context (the device's primary context, shared with PyTorch).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch goes to: the context's legacy default stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn build(ordinal: usize, arch: Option<&str>) -> Result<Self, LossError> {
        // SAFETY: only tries to dlopen the library; `CudaContext::new` panics without one.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(LossError::CudaUnavailable(format!(
                "no CUDA driver library (libcuda.so) found (asked for device {ordinal})"
            )));
        }
        // SAFETY: as above, for NVRTC.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(LossError::CudaUnavailable(
                "NVRTC (libnvrtc.so.13) not found on the library path".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| LossError::CudaUnavailable(format!("CUDA device {ordinal}: {e}")))?;
        // One stream only (the legacy default stream), so cudarc's cross-stream events are
        // pure overhead; without them `device_ptr` guards are no-ops and raw addresses from
        // other libraries (PyTorch tensors) mix freely with our buffers.
        // SAFETY: nothing here uses a second stream.
        unsafe { ctx.disable_event_tracking() };
        let capability = ctx
            .compute_capability()
            .map_err(driver("compute capability"))?;
        let arch = arch
            .map(str::to_owned)
            .unwrap_or_else(|| format!("compute_{}{}", capability.0, capability.1));
        let mut functions = HashMap::new();
        for &(file, source, entries) in kernels::SOURCES {
            let out = nvrtc_compile(
                source,
                file,
                &[format!("--gpu-architecture={arch}"), "--std=c++17".into()],
            )?;
            if !out.log.trim().is_empty() {
                tracing::debug!(file, log = %out.log, "NVRTC log");
            }
            let module = ctx
                .load_module(Ptx::from_src(out.ptx))
                .map_err(driver("load module"))?;
            for &entry in entries {
                let f = module
                    .load_function(entry)
                    .map_err(|e| LossError::library(format!("CUDA load {entry} from {file}"), e))?;
                functions.insert(entry, f);
            }
        }
        let stream = ctx.default_stream();
        tracing::info!(ordinal, ?capability, %arch, "CUDA loss backend ready");
        Ok(Self {
            ctx,
            stream,
            functions,
            precision: Precision::F32,
            arch,
            capability,
        })
    }

    fn upload<T: DeviceRepr>(&self, host: &[T], what: &str) -> Result<CudaSlice<T>, LossError> {
        if host.is_empty() {
            // SAFETY: a one-element buffer nobody reads (kernels skip empty ranges).
            return unsafe { self.stream.alloc::<T>(1) }.map_err(driver(what));
        }
        self.stream.clone_htod(host).map_err(driver(what))
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
        what: &str,
    ) -> Result<CudaSlice<T>, LossError> {
        self.stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(driver(what))
    }

    fn addr<T>(&self, slice: &CudaSlice<T>) -> u64 {
        // Event tracking is off: the guard records nothing.
        let (ptr, _guard) = slice.device_ptr(&self.stream);
        ptr
    }

    fn launch(&self, launch: &plan::Launch) -> Result<(), LossError> {
        let func = self.functions.get(launch.entry.as_str()).ok_or_else(|| {
            LossError::Backend(format!("CUDA kernel {} was not loaded", launch.entry))
        })?;
        let mut builder = self.stream.launch_builder(func);
        for arg in &launch.args {
            match arg {
                KernelArg::Ptr(p) => builder.arg(p),
                KernelArg::Int(i) => builder.arg(i),
                KernelArg::Float(f) => builder.arg(f),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: launch.dims.grid,
            block_dim: launch.dims.block,
            shared_mem_bytes: launch.dims.shared_bytes,
        };
        // SAFETY: the arguments follow the entry point's C signature (plan's tests check the
        // kinds against the sources) and every address points to a live buffer of the size
        // the kernel indexes (allocated by `run` from the same Problem).
        unsafe { builder.launch(cfg) }
            .map_err(|e| LossError::library(format!("CUDA launch {}", launch.entry), e))?;
        Ok(())
    }

    fn check_precision(&self) -> Result<(), LossError> {
        if self.precision == Precision::Tf32 && self.capability.0 < 8 {
            return Err(LossError::Backend(format!(
                "TF32 tensor cores need compute capability 8.0 or newer; device has {}.{}",
                self.capability.0, self.capability.1
            )));
        }
        Ok(())
    }

    /// Runs every launch of one evaluation. `features`, `keys` and `grad` are device
    /// addresses (ours or a PyTorch tensor's); returns Σ_{i∈I} ℓ_i after synchronizing.
    fn run(
        &self,
        problem: &Problem,
        index: &ClassIndex,
        options: &SupConOptions,
        features: u64,
        keys: u64,
        grad: u64,
    ) -> Result<f64, LossError> {
        self.check_precision()?;
        let p = problem;
        let scalars = Scalars::new(options, index);
        let class_rows = scalars.class_sum_len(p.dim);
        let contrast = self.zeros::<f32>(p.contrast * p.dim, "alloc contrast rows")?;
        let inv_norm = self.zeros::<f32>(p.contrast, "alloc norms")?;
        let cls = self.upload(&index.cls, "upload class ids")?;
        let npos = self.upload(&index.npos, "upload |P(i)|")?;
        let perm = self.upload(&index.perm, "upload class order")?;
        let seg = self.upload(&index.seg, "upload class segments")?;
        let gco = self.upload(
            &index.gradient_coefficients(scalars.coef),
            "upload coefficients",
        )?;
        let class_s = self.zeros::<f32>(class_rows, "alloc class sums")?;
        let class_t = self.zeros::<f32>(class_rows, "alloc class sums")?;
        let lse = self.zeros::<f32>(p.anchors, "alloc LSE")?;
        let lsep = self.zeros::<f32>(p.anchors, "alloc LSEP")?;
        let ell = self.zeros::<f32>(p.anchors, "alloc loss terms")?;
        let grad_anchor = self.zeros::<f32>(p.anchors * p.dim, "alloc anchor gradient")?;
        let grad_contrast = self.zeros::<f32>(p.feature_rows * p.dim, "alloc contrast gradient")?;
        let loss_sum = self.zeros::<f64>(1, "alloc loss sum")?;
        let buffers = Buffers {
            features,
            keys,
            contrast: self.addr(&contrast),
            inv_norm: self.addr(&inv_norm),
            cls: self.addr(&cls),
            npos: self.addr(&npos),
            perm: self.addr(&perm),
            seg: self.addr(&seg),
            class_s: self.addr(&class_s),
            class_t: self.addr(&class_t),
            lse: self.addr(&lse),
            lsep: self.addr(&lsep),
            ell: self.addr(&ell),
            gco: self.addr(&gco),
            grad_anchor: self.addr(&grad_anchor),
            grad_contrast: self.addr(&grad_contrast),
            grad,
            loss_sum: self.addr(&loss_sum),
        };
        for launch in plan::schedule(p, &scalars, self.precision, &buffers)? {
            self.launch(&launch)?;
        }
        // The copy synchronizes the stream: every kernel (the gradient included) is done.
        let sum = self
            .stream
            .clone_dtoh(&loss_sum)
            .map_err(driver("download loss"))?;
        self.ctx.check_err().map_err(driver("kernel execution"))?;
        sum.first()
            .copied()
            .ok_or_else(|| LossError::Backend("CUDA loss sum buffer is empty".into()))
    }

    /// Times `iterations` evaluations of `input` with device events, after `warmup` untimed
    /// ones. Features and keys are uploaded once (as in training, where they already live on
    /// the GPU); each timed evaluation includes the host-side class index, its upload, every
    /// kernel and the read-back of the loss. Returns milliseconds per evaluation.
    pub fn time_compute(
        &self,
        input: &SupConInput<'_>,
        options: &SupConOptions,
        warmup: usize,
        iterations: usize,
    ) -> Result<Vec<f32>, LossError> {
        validate(input, options)?;
        let (batch, views, dim) = input.features.dim();
        let problem = Problem::new(batch, views, dim, input.queue_len(), options.contrast_mode)?;
        let queue_labels = input.queue.as_ref().map_or(&[][..], |q| q.labels);
        let features = input.features.as_standard_layout();
        let features = self.upload(
            features
                .as_slice()
                .ok_or_else(|| LossError::Backend("features are not contiguous".into()))?,
            "upload features",
        )?;
        let keys = match &input.queue {
            Some(q) if problem.queue > 0 => {
                let k = q.keys.as_standard_layout();
                self.upload(
                    k.as_slice().ok_or_else(|| {
                        LossError::Backend("queue keys are not contiguous".into())
                    })?,
                    "upload queue keys",
                )?
            }
            _ => self.zeros::<f32>(1, "alloc queue keys")?,
        };
        let grad = self.zeros::<f32>(problem.feature_rows * dim, "alloc gradient")?;
        let (f, k, g) = (self.addr(&features), self.addr(&keys), self.addr(&grad));
        let once = || -> Result<f64, LossError> {
            let index = ClassIndex::new(&problem, input.labels, queue_labels)?;
            self.run(&problem, &index, options, f, k, g)
        };
        for _ in 0..warmup {
            once()?;
        }
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = self
                .ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(driver("event"))?;
            let end = self
                .ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(driver("event"))?;
            start.record(&self.stream).map_err(driver("event record"))?;
            once()?;
            end.record(&self.stream).map_err(driver("event record"))?;
            end.synchronize().map_err(driver("event sync"))?;
            times.push(start.elapsed_ms(&end).map_err(driver("event elapsed"))?);
        }
        Ok(times)
    }

    /// Device memory (free, total) in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize), LossError> {
        self.ctx.mem_get_info().map_err(driver("memory info"))
    }

    /// The loss of f32 features that already live on this backend's device, in memory another
    /// library owns (a PyTorch tensor's `data_ptr()`), its gradient written into the caller's
    /// memory too ([`DeviceBuffers`]): no host copy either way. The Python package's CUDA
    /// path. Returns the loss and |I|.
    ///
    /// Shapes and options are checked as at every entry point ([`crate::check_shape`]); the
    /// finiteness of the values and, with `normalize`, their zero rows are the caller's to
    /// check on the device (the Python layer does it with torch; [`CudaBackend::compute_tch`]
    /// with libtorch), and a loss that is not finite is an error. The stream rule of
    /// [`CudaBackend::compute_tch`] holds: every launch goes to the legacy default stream, and
    /// the call returns after synchronizing it.
    ///
    /// # Safety
    /// `buffers.features` must address `batch·views·dim` contiguous f32 on this backend's
    /// device, the queue's keys (when given) `k·dim`, and `buffers.grad` `batch·views·dim` f32
    /// that nothing else reads or writes until the call returns; the work that wrote the
    /// features and the keys must be ordered before the legacy default stream's next launch.
    pub unsafe fn compute_device(
        &self,
        buffers: DeviceBuffers<'_>,
        options: &SupConOptions,
    ) -> Result<(f64, usize), LossError> {
        let DeviceBuffers {
            features,
            shape,
            labels,
            queue,
            grad,
        } = buffers;
        crate::check_shape(
            &crate::InputShape {
                features: shape,
                labels: labels.map(<[i64]>::len),
                queue: queue.map(|(_, k, key_labels)| (k, shape[2], key_labels.len())),
            },
            options,
        )?;
        let addresses = [(features, "features"), (grad, "gradient")];
        for (address, what) in addresses
            .into_iter()
            .chain(queue.map(|(a, _, _)| (a, "queue keys")))
        {
            if address == 0 {
                return Err(LossError::ShapeMismatch {
                    what,
                    expected: "a device address".into(),
                    actual: "0 (a null pointer)".into(),
                });
            }
        }
        // SAFETY: the caller's contract.
        unsafe { self.run_on_device(buffers, options) }
    }

    /// [`CudaBackend::compute_device`] after its checks: zeroes the gradient, then runs the
    /// kernels.
    ///
    /// # Safety
    /// As [`CudaBackend::compute_device`].
    unsafe fn run_on_device(
        &self,
        DeviceBuffers {
            features,
            shape: [batch, views, dim],
            labels,
            queue,
            grad,
        }: DeviceBuffers<'_>,
        options: &SupConOptions,
    ) -> Result<(f64, usize), LossError> {
        let (keys, k, queue_labels) = queue.unwrap_or((0, 0, &[]));
        let problem = Problem::new(batch, views, dim, k, options.contrast_mode)?;
        let index = ClassIndex::new(&problem, labels, queue_labels)?;
        let grad_bytes = batch * views * dim * std::mem::size_of::<f32>();
        // SAFETY: `grad` addresses `grad_bytes` writable bytes (the caller's contract), and
        // the memset is ordered before the kernels on the same stream.
        unsafe {
            cudarc::driver::result::memset_d8_async(grad, 0, grad_bytes, self.stream.cu_stream())
        }
        .map_err(driver("zero the gradient"))?;
        if index.anchors_with_positives == 0 {
            self.stream
                .synchronize()
                .map_err(driver("zero the gradient"))?;
            return Ok((0.0, 0));
        }
        let key_fallback;
        let keys = if k > 0 {
            keys
        } else {
            key_fallback = self.zeros::<f32>(1, "alloc queue keys")?;
            self.addr(&key_fallback)
        };
        let sum = self.run(&problem, &index, options, features, keys, grad)?;
        let loss = finish_loss(sum, options, index.anchors_with_positives)?;
        Ok((loss, index.anchors_with_positives))
    }
}

fn finish_loss(sum: f64, options: &SupConOptions, anchors: usize) -> Result<f64, LossError> {
    let loss = options.loss_scale() * sum / anchors as f64;
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(LossError::Overflow { value: loss })
    }
}

impl SupConBackend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn compute(
        &self,
        input: &SupConInput<'_>,
        options: &SupConOptions,
    ) -> Result<LossOutput, LossError> {
        validate(input, options)?;
        let (batch, views, dim) = input.features.dim();
        let problem = Problem::new(batch, views, dim, input.queue_len(), options.contrast_mode)?;
        let queue_labels = input.queue.as_ref().map_or(&[][..], |q| q.labels);
        let index = ClassIndex::new(&problem, input.labels, queue_labels)?;
        if index.anchors_with_positives == 0 {
            return Ok(LossOutput::zero([batch, views, dim]));
        }
        let features = input.features.as_standard_layout();
        let features = features
            .as_slice()
            .ok_or_else(|| LossError::Backend("features are not contiguous".into()))?;
        let features = self.upload(features, "upload features")?;
        let keys = match &input.queue {
            Some(q) if problem.queue > 0 => {
                let k = q.keys.as_standard_layout();
                let k = k
                    .as_slice()
                    .ok_or_else(|| LossError::Backend("queue keys are not contiguous".into()))?;
                self.upload(k, "upload queue keys")?
            }
            _ => self.zeros::<f32>(1, "alloc queue keys")?,
        };
        let grad = self.zeros::<f32>(problem.feature_rows * dim, "alloc gradient")?;
        let sum = self.run(
            &problem,
            &index,
            options,
            self.addr(&features),
            self.addr(&keys),
            self.addr(&grad),
        )?;
        let loss = finish_loss(sum, options, index.anchors_with_positives)?;
        let grad = self
            .stream
            .clone_dtoh(&grad)
            .map_err(driver("download gradient"))?;
        let grad = Array3::from_shape_vec((batch, views, dim), grad)
            .map_err(|e| LossError::Backend(format!("gradient shape: {e}")))?;
        Ok(LossOutput {
            loss,
            grad,
            anchors: index.anchors_with_positives,
        })
    }
}

#[cfg(feature = "tch")]
mod zero_copy {
    use super::*;
    use crate::supcon::cuda::TchLossOutput;
    use tch::{Device, Kind, Tensor};

    impl CudaBackend {
        /// The loss of CUDA tensors without a host round trip: the kernels read `features`
        /// (`[batch, views, dim]`, f32, on this backend's device) in place and write the
        /// gradient into a new tensor on that device. Labels stay on the host (they come from
        /// the data loader; their class index is computed there).
        ///
        /// **Stream rule.** PyTorch and this backend share the device's primary context;
        /// every launch goes to the legacy default stream, which is also PyTorch's default
        /// stream (tch never switches streams), so the features are ready when the kernels
        /// run and PyTorch's next kernels see the gradient. Code that made another PyTorch
        /// stream current must synchronize it before this call. The call returns after a
        /// synchronization of the default stream (the loss is read back).
        ///
        /// Inputs are checked with the rules of every entry point ([`crate::check_shape`]),
        /// the finiteness of features and keys (one synchronization) and, with `normalize`,
        /// their zero rows on the device (no copy) and, for this backend, that the tensors
        /// are f32 on this backend's device. Without
        /// batch labels the queue labels are not read.
        pub fn compute_tch(
            &self,
            features: &Tensor,
            labels: Option<&[i64]>,
            queue: Option<(&Tensor, &[i64])>,
            options: &SupConOptions,
        ) -> Result<TchLossOutput, LossError> {
            let device = Device::Cuda(self.ctx.ordinal());
            let check = |t: &Tensor, what: &'static str, rank: usize| -> Result<(), LossError> {
                if t.device() != device || t.kind() != Kind::Float || t.dim() != rank {
                    return Err(LossError::ShapeMismatch {
                        what,
                        expected: format!("a {rank}-d f32 tensor on {device:?}"),
                        actual: format!("{:?} {:?} on {:?}", t.kind(), t.size(), t.device()),
                    });
                }
                Ok(())
            };
            check(features, "features tensor", 3)?;
            if let Some((keys, _)) = queue {
                check(keys, "queue keys tensor", 2)?;
            }
            let size = features.size();
            let [batch, views, dim] = [size[0], size[1], size[2]].map(|s| s as usize);
            crate::check_shape(
                &crate::InputShape {
                    features: [batch, views, dim],
                    labels: labels.map(<[i64]>::len),
                    queue: queue.map(|(keys, key_labels)| {
                        let ks = keys.size();
                        (ks[0] as usize, ks[1] as usize, key_labels.len())
                    }),
                },
                options,
            )?;
            let mut inputs = vec![(features, "features")];
            inputs.extend(queue.map(|(keys, _)| (keys, "queue keys")));
            crate::libtorch::check_all_finite(&inputs)?;
            let (keys, queue_labels) = match queue {
                Some((keys, key_labels)) => (Some(keys.contiguous()), key_labels),
                None => (None, &[][..]),
            };
            // The kernels would divide a zero row by its norm: found here, as the other
            // entry points find it (a NaN loss was all the GPU showed before).
            if options.normalize {
                crate::libtorch::row_norms(features, "features").map(drop)?;
                if let Some(keys) = &keys {
                    crate::libtorch::row_norms(keys, "queue keys").map(drop)?;
                }
            }
            let k = keys.as_ref().map_or(0, |t| t.size()[0] as usize);
            let features = features.contiguous();
            let grad = Tensor::empty(
                [batch as i64, views as i64, dim as i64],
                (Kind::Float, device),
            );
            let queue = keys
                .as_ref()
                .map(|keys| (keys.data_ptr() as u64, k, queue_labels));
            // SAFETY: `features`, the keys and `grad` are contiguous f32 tensors of these
            // shapes on this device (checked above), alive until the call returns, and
            // written by libtorch on the default stream, which the kernels use too.
            let buffers = DeviceBuffers {
                features: features.data_ptr() as u64,
                shape: [batch, views, dim],
                labels,
                queue,
                grad: grad.data_ptr() as u64,
            };
            let (loss, anchors) = unsafe { self.run_on_device(buffers, options) }?;
            Ok(TchLossOutput {
                loss,
                grad,
                anchors,
            })
        }
    }
}
