//! The CUDA kernels, run on the CPU: the real `.cu` sources are compiled with the host C++
//! compiler against `src/supcon/cuda/kernels/emulate/cuda_shim.h` (threads of a block as coroutines,
//! `__syncthreads` as a barrier, warp shuffles and TF32 `mma.sync` emulated), and the exact
//! launch schedule of `plan::schedule` (entries, grids, arguments, buffer offsets) is executed
//! on host buffers. The result must match the CPU reference within the GPU tests' tolerance.
//!
//! This checks the kernels' indexing, tiling of ragged sizes, barriers, online log-sum-exp and
//! the host orchestration on machines without a GPU. It cannot check timing, memory
//! coalescing, or the hardware's own `mma` behaviour (the emulation encodes the PTX ISA's
//! fragment layout, the same assumption the kernel makes).
//!
//! Needs a C++17 compiler (`$CXX`, else `c++`), as the libtorch build does. Where none can be
//! started the tests say so on stderr and skip (a bare Rust toolchain builds and tests the
//! crate); a compiler that exists but fails on the kernels is a test failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::f32_case::{run_case, Case, Data};
use ndarray::Array3;
use supcon_loss::cuda::plan::{
    schedule, Buffers, ClassIndex, KernelArg, Precision, Problem, Scalars,
};
use supcon_loss::{ContrastMode, CpuBackend, LossOutput, SupConOptions, Variant, UNLABELED};

const KERNELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/supcon/cuda/kernels");

fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("supcon-cuda-emulation");
    std::fs::create_dir_all(&dir).expect("create the emulation folder");
    dir
}

/// Builds the emulator once per test binary; `None` when there is no C++ compiler to start.
fn emulator() -> Option<&'static Path> {
    static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let out = work_dir().join(format!("emulate-{}", std::process::id()));
            let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
            let status = match Command::new(&cxx)
                .args(["-std=c++17", "-O2", "-w", "-o"])
                .arg(&out)
                .arg(Path::new(KERNELS).join("emulate/emulate.cpp"))
                .status()
            {
                Ok(status) => status,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!(
                        "skipped: no C++ compiler {cxx:?} to build the CUDA kernel emulator \
                         (set $CXX, or install g++); the kernels are not checked on this machine"
                    );
                    return None;
                }
                Err(e) => panic!("cannot run the C++ compiler {cxx:?}: {e}"),
            };
            assert!(
                status.success(),
                "{cxx} failed to compile the kernel emulator"
            );
            Some(out)
        })
        .as_deref()
}

fn bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_i32(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Host buffers standing in for device memory; address = (id + 1) << 40 plus a byte offset.
struct Memory {
    dir: PathBuf,
    plan: String,
    next: u64,
}

impl Memory {
    fn buffer(&mut self, bytes: usize, content: Option<Vec<u8>>) -> u64 {
        let id = self.next;
        self.next += 1;
        let bytes = bytes.max(4);
        match content {
            Some(mut data) => {
                data.resize(bytes, 0);
                let file = self.dir.join(format!("in{id}.bin"));
                std::fs::write(&file, data).expect("write input");
                self.plan
                    .push_str(&format!("buffer {id} {bytes} {}\n", file.display()));
            }
            None => self.plan.push_str(&format!("buffer {id} {bytes}\n")),
        }
        (id + 1) << 40
    }
}

fn decode(addr: u64) -> (u64, u64) {
    ((addr >> 40) - 1, addr & ((1 << 40) - 1))
}

/// Runs the CUDA schedule for `case` in the emulator; returns (loss, grad, anchors).
fn emulate(
    emulator: &Path,
    case: &Case,
    data: &Data,
    precision: Precision,
    tag: &str,
) -> LossOutput {
    let (b, v, d) = (case.batch, case.views, case.dim);
    let problem = Problem::new(b, v, d, case.queue, case.options.contrast_mode).unwrap();
    let index = ClassIndex::new(&problem, data.labels.as_deref(), &data.key_labels).unwrap();
    assert!(index.anchors_with_positives > 0, "the cases need positives");
    let scalars = Scalars::new(&case.options, &index);
    let dir = work_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut mem = Memory {
        dir: dir.clone(),
        plan: String::new(),
        next: 0,
    };
    let (n, m, rows) = (problem.anchors, problem.contrast, problem.feature_rows);
    let class_len = scalars.class_sum_len(d);
    let buffers = Buffers {
        features: mem.buffer(
            4 * rows * d,
            Some(bytes_f32(data.features.as_slice().unwrap())),
        ),
        keys: mem.buffer(
            4 * case.queue * d,
            Some(bytes_f32(data.keys.as_slice().unwrap())),
        ),
        contrast: mem.buffer(4 * m * d, None),
        inv_norm: mem.buffer(4 * m, None),
        cls: mem.buffer(4 * m, Some(bytes_i32(&index.cls))),
        npos: mem.buffer(4 * n, Some(bytes_i32(&index.npos))),
        perm: mem.buffer(4 * m, Some(bytes_i32(&index.perm))),
        seg: mem.buffer(4 * (index.classes + 1), Some(bytes_i32(&index.seg))),
        class_s: mem.buffer(4 * class_len, None),
        class_t: mem.buffer(4 * class_len, None),
        lse: mem.buffer(4 * n, None),
        lsep: mem.buffer(4 * n, None),
        ell: mem.buffer(4 * n, None),
        gco: mem.buffer(
            4 * n,
            Some(bytes_f32(&index.gradient_coefficients(scalars.coef))),
        ),
        grad_anchor: mem.buffer(4 * n * d, None),
        grad_contrast: mem.buffer(4 * rows * d, None),
        grad: mem.buffer(4 * rows * d, None),
        loss_sum: mem.buffer(8, None),
    };
    for launch in schedule(&problem, &scalars, precision, &buffers).unwrap() {
        let (g, t) = (launch.dims.grid, launch.dims.block);
        let mut line = format!(
            "launch {} {} {} {} {} {} {}",
            launch.entry, g.0, g.1, g.2, t.0, t.1, t.2
        );
        for arg in &launch.args {
            match *arg {
                KernelArg::Ptr(addr) => {
                    let (id, offset) = decode(addr);
                    line.push_str(&format!(" p {id} {offset}"));
                }
                KernelArg::Int(i) => line.push_str(&format!(" i {i}")),
                KernelArg::Float(f) => line.push_str(&format!(" f {f:e}")),
            }
        }
        mem.plan.push_str(&line);
        mem.plan.push('\n');
    }
    let grad_file = dir.join("grad.bin");
    let sum_file = dir.join("sum.bin");
    mem.plan.push_str(&format!(
        "out {} {}\nout {} {}\n",
        decode(buffers.grad).0,
        grad_file.display(),
        decode(buffers.loss_sum).0,
        sum_file.display()
    ));
    let plan_file = dir.join("plan.txt");
    std::fs::write(&plan_file, &mem.plan).unwrap();
    let status = Command::new(emulator)
        .arg(&plan_file)
        .status()
        .expect("run the emulator");
    assert!(
        status.success(),
        "emulator failed on plan {}",
        plan_file.display()
    );
    let grad: Vec<f32> = std::fs::read(&grad_file)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let sum_bytes = std::fs::read(&sum_file).unwrap();
    let sum = f64::from_le_bytes(sum_bytes[..8].try_into().unwrap());
    std::fs::remove_dir_all(&dir).ok();
    LossOutput {
        loss: case.options.loss_scale() * sum / index.anchors_with_positives as f64,
        grad: Array3::from_shape_vec((b, v, d), grad).unwrap(),
        anchors: index.anchors_with_positives,
    }
}

fn assert_close(what: &str, got: &LossOutput, want: &LossOutput, loss_tol: f64, grad_tol: f32) {
    assert_eq!(got.anchors, want.anchors, "{what}: anchors");
    assert!(
        (got.loss - want.loss).abs() <= loss_tol * want.loss.abs().max(1.0),
        "{what}: loss {} vs CPU {}",
        got.loss,
        want.loss
    );
    let scale = want.grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    let worst = got
        .grad
        .iter()
        .zip(want.grad.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= grad_tol * scale + 1e-7,
        "{what}: gradient off by {worst} (largest element {scale})"
    );
}

fn check(tag: &str, case: Case, precision: Precision) {
    check_data(tag, &case, case.data(), precision);
}

fn check_data(tag: &str, case: &Case, data: Data, precision: Precision) {
    let Some(emulator) = emulator() else {
        return;
    };
    let want = run_case(&CpuBackend::default(), case, &data);
    let got = emulate(emulator, case, &data, precision, tag);
    let (loss_tol, grad_tol) = match precision {
        Precision::F32 => (1e-4, 1e-3),
        Precision::Tf32 => (5e-3, 2e-2),
    };
    assert_close(tag, &got, &want, loss_tol, grad_tol);
}

#[test]
fn emulated_f32_l_out_with_labels_matches_cpu() {
    // n = M = 74: two anchor blocks, the second ragged; D = 33: three k-chunks, one ragged.
    check(
        "lout",
        Case {
            batch: 37,
            views: 2,
            dim: 33,
            queue: 0,
            classes: Some(5),
            options: SupConOptions::default(),
            seed: 11,
        },
        Precision::F32,
    );
}

#[test]
fn emulated_f32_l_in_contrast_one_queue_normalize_matches_cpu() {
    check(
        "lin-one-queue",
        Case {
            batch: 30,
            views: 3,
            dim: 20,
            queue: 11,
            classes: Some(4),
            options: SupConOptions::default()
                .with_temperature(0.5)
                .with_base_temperature(Some(0.07))
                .with_variant(Variant::In)
                .with_contrast_mode(ContrastMode::One)
                .with_normalize(true),
            seed: 12,
        },
        Precision::F32,
    );
}

#[test]
fn emulated_f32_simclr_with_queue_and_two_column_slices_matches_cpu() {
    // No labels: queue keys are pure negatives. D = 130 > 128: two column slices.
    check(
        "simclr",
        Case {
            batch: 40,
            views: 2,
            dim: 130,
            queue: 9,
            classes: None,
            options: SupConOptions::simclr(0.2).with_normalize(true),
            seed: 13,
        },
        Precision::F32,
    );
}

#[test]
fn emulated_tf32_matches_cpu_within_tf32_tolerance() {
    check(
        "tf32",
        Case {
            batch: 45,
            views: 2,
            dim: 24,
            queue: 5,
            classes: Some(3),
            options: SupConOptions::default()
                .with_variant(Variant::In)
                .with_normalize(true),
            seed: 14,
        },
        Precision::Tf32,
    );
    check(
        "tf32-out",
        Case {
            batch: 33,
            views: 2,
            dim: 40,
            queue: 0,
            classes: Some(4),
            options: SupConOptions::default(),
            seed: 15,
        },
        Precision::Tf32,
    );
}

#[test]
fn emulated_f32_semi_supervised_matches_cpu() {
    // Every fourth sample and every third queue key without a label (semi-supervised SupCon).
    let case = Case {
        batch: 33,
        views: 2,
        dim: 24,
        queue: 10,
        classes: Some(4),
        options: SupConOptions::default().with_normalize(true),
        seed: 15,
    };
    let mut data = case.data();
    if let Some(labels) = &mut data.labels {
        labels.iter_mut().step_by(4).for_each(|y| *y = UNLABELED);
    }
    data.key_labels
        .iter_mut()
        .step_by(3)
        .for_each(|y| *y = UNLABELED);
    check_data("semi", &case, data, Precision::F32);
}
