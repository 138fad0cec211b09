//! Host-side tests of the CUDA backend: constants vs. the sources, launch dimensions, shared
//! memory budgets, argument packing vs. the C signatures, the class index. No GPU needed.

use super::kernels;
use super::plan::*;
use crate::{ContrastMode, LossError};

/// `#define NAME value` from a source.
fn define(source: &str, name: &str) -> usize {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#define "))
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("#define {name} not found"))
}

/// The parameter kinds ('p', 'i', 'f') of `extern "C"` entry `entry` in `source`.
fn signature(source: &str, entry: &str) -> Vec<char> {
    let at = source
        .find(&format!("\n{entry}("))
        .or_else(|| source.find(&format!(" {entry}(")))
        .unwrap_or_else(|| panic!("entry {entry} not found"));
    let open = at + source[at..].find('(').unwrap_or(0) + 1;
    let close = open + source[open..].find(')').unwrap_or(0);
    source[open..close]
        .split(',')
        .map(|param| {
            let param = param.trim();
            if param.contains('*') {
                'p'
            } else if param.starts_with("int ") {
                'i'
            } else if param.starts_with("float ") {
                'f'
            } else {
                panic!("unknown parameter {param:?} of {entry}")
            }
        })
        .collect()
}

#[test]
fn host_constants_match_the_kernel_sources() {
    let t = kernels::TILES;
    assert_eq!(define(t, "SUPCON_BM"), BM);
    assert_eq!(define(t, "SUPCON_BN"), BN);
    assert_eq!(define(t, "SUPCON_BK"), BK);
    assert_eq!(define(t, "SUPCON_DS"), DS);
    assert_eq!(define(t, "SUPCON_THREADS"), THREADS);
    assert_eq!(define(t, "SUPCON_PAD"), PAD);
    let r = kernels::ROWS;
    assert_eq!(define(r, "SUPCON_ROW_WARPS"), ROW_WARPS);
    assert_eq!(define(r, "SUPCON_SUM_THREADS"), SUM_THREADS);
    assert_eq!(define(r, "SUPCON_CLASS_THREADS"), CLASS_THREADS);
    // The thread layout the kernels assume: 16 × 16 threads own 4 × 4 score elements each,
    // 8 warps of 16 × 32 tensor-core strips, 16 threads × 8 columns cover a DS slice.
    assert_eq!(THREADS, 256);
    assert_eq!((BM / 4) * (BN / 4), THREADS);
    assert_eq!(16 * 8, DS);
    assert_eq!(BK % 8, 0, "mma k-step is 8");
    assert_eq!(BN % BK, 0);
}

#[test]
fn every_entry_point_is_in_its_source() {
    for &(file, source, entries) in kernels::SOURCES {
        for entry in entries {
            assert!(
                source.contains("extern \"C\" __global__") && !signature(source, entry).is_empty(),
                "{entry} missing from {file}"
            );
        }
    }
    for kernel in TileKernel::ALL {
        for precision in [Precision::F32, Precision::Tf32] {
            assert!(kernels::TILES_ENTRIES.contains(&kernel.entry(precision).as_str()));
        }
    }
}

#[test]
fn shared_memory_fits_the_static_limit() {
    for kernel in TileKernel::ALL {
        for precision in [Precision::F32, Precision::Tf32] {
            let bytes = kernel.shared_bytes(precision);
            assert!(
                bytes <= STATIC_SHARED_LIMIT,
                "{kernel:?} {precision:?}: {bytes} bytes"
            );
            assert!(bytes > 8 * 1024, "{kernel:?}: implausibly small {bytes}");
        }
    }
    assert!(
        TileKernel::Forward.shared_bytes(Precision::Tf32)
            > TileKernel::Forward.shared_bytes(Precision::F32)
    );
}

#[test]
fn launch_dims_cover_sizes_that_are_not_tile_multiples() {
    // B = 37, V = 3, D = 130, K = 5: n = 111 (All), M = 116, two DS slices.
    let p = Problem::new(37, 3, 130, 5, ContrastMode::All).unwrap();
    assert_eq!((p.anchors, p.contrast, p.feature_rows), (111, 116, 111));
    assert_eq!(p.forward().unwrap().grid, (2, 1, 1));
    assert_eq!(p.grad_anchor().unwrap().grid, (2, 2, 1));
    assert_eq!(p.grad_contrast().unwrap().grid, (2, 2, 1));
    assert_eq!(p.forward().unwrap().block, (THREADS as u32, 1, 1));
    assert_eq!(p.rows(111).unwrap().grid, (14, 1, 1)); // 14·8 = 112 ≥ 111 warps
    assert_eq!(p.rows(111).unwrap().block, (256, 1, 1));
    assert_eq!(p.class_sums(7).unwrap().grid, (7, 2, 1));
    assert_eq!(p.sum_terms().unwrap().grid, (1, 1, 1));
    // ContrastMode::One: n = B.
    let one = Problem::new(37, 3, 130, 5, ContrastMode::One).unwrap();
    assert_eq!(one.anchors, 37);
    assert_eq!(one.forward().unwrap().grid, (1, 1, 1));
    // Every row of every side is owned by exactly one block (grid · tile ≥ rows > (grid−1) · tile).
    for (rows, d) in [
        (1usize, 1usize),
        (63, 127),
        (64, 128),
        (65, 129),
        (65_536, 128),
        (1_000_000, 128),
    ] {
        let p = Problem::new(rows, 1, d, 0, ContrastMode::All).unwrap();
        let g = p.grad_anchor().unwrap().grid;
        assert!(g.0 as usize * BM >= rows && (g.0 as usize - 1) * BM < rows);
        assert!(g.1 as usize * DS >= d && (g.1 as usize - 1) * DS < d);
        assert!(g.1 as usize <= MAX_GRID_Y);
    }
}

#[test]
fn oversized_problems_are_refused_with_a_clear_error() {
    let err = Problem::new(4, 2, MAX_DIM + 1, 0, ContrastMode::All).unwrap_err();
    assert!(
        matches!(&err, LossError::ShapeMismatch { what, .. } if what.contains("dim")),
        "{err}"
    );
    assert!(err.to_string().contains("4097"), "{err}");
    assert!(Problem::new(4, 2, MAX_DIM, 0, ContrastMode::All).is_ok());
    let err = Problem::new(1 << 31, 1, 8, 0, ContrastMode::All).unwrap_err();
    assert!(err.to_string().contains("batch · views"), "{err}");
    let err = Problem::new(0, 2, 8, 0, ContrastMode::All).unwrap_err();
    assert!(matches!(err, LossError::EmptyAxis { axis: "batch", .. }));
}

fn sample_buffers() -> Buffers {
    let mut next = 0x7000_0000_0000u64;
    let mut addr = || {
        next += 0x10_0000;
        next
    };
    Buffers {
        features: addr(),
        keys: addr(),
        contrast: addr(),
        inv_norm: addr(),
        cls: addr(),
        npos: addr(),
        perm: addr(),
        seg: addr(),
        class_s: addr(),
        class_t: addr(),
        lse: addr(),
        lsep: addr(),
        ell: addr(),
        gco: addr(),
        grad_anchor: addr(),
        grad_contrast: addr(),
        grad: addr(),
        loss_sum: addr(),
    }
}

#[test]
fn packed_arguments_match_the_c_signatures() {
    let buf = sample_buffers();
    for (variant_in, queue, precision) in [
        (false, 0, Precision::F32),
        (false, 9, Precision::Tf32),
        (true, 0, Precision::Tf32),
        (true, 9, Precision::F32),
    ] {
        let p = Problem::new(10, 2, 33, queue, ContrastMode::All).unwrap();
        let scalars = Scalars {
            inv_tau: 10.0,
            coef: 0.5,
            variant_in,
            normalize: true,
            classes: 4,
        };
        let launches = schedule(&p, &scalars, precision, &buf).unwrap();
        for launch in &launches {
            let source = kernels::SOURCES
                .iter()
                .find(|(_, _, entries)| entries.contains(&launch.entry.as_str()))
                .map(|(_, s, _)| *s)
                .unwrap_or_else(|| panic!("{} is in no source", launch.entry));
            let kinds: Vec<char> = launch.args.iter().map(KernelArg::kind).collect();
            assert_eq!(kinds, signature(source, &launch.entry), "{}", launch.entry);
        }
        let names: Vec<&str> = launches.iter().map(|l| l.entry.as_str()).collect();
        let sfx = precision.suffix();
        let mut expected = vec!["supcon_gather_rows".to_string()];
        if queue > 0 {
            expected.push("supcon_gather_rows".into());
        }
        if !variant_in {
            expected.push("supcon_class_sums".into());
        }
        expected.push(format!("supcon_forward_{sfx}"));
        expected.push("supcon_sum_terms".into());
        expected.push(format!("supcon_grad_anchor_{sfx}"));
        expected.push(format!("supcon_grad_contrast_{sfx}"));
        if !variant_in {
            expected.push("supcon_class_sums".into());
        }
        expected.push("supcon_finalize_grad".into());
        assert_eq!(names, expected);
        if queue > 0 {
            // The keys land after the V·B = 20 feature rows of D = 33 floats.
            assert_eq!(
                launches[1].args[5],
                KernelArg::Ptr(buf.contrast + 20 * 33 * 4)
            );
            assert_eq!(launches[1].args[6], KernelArg::Ptr(buf.inv_norm + 20 * 4));
            assert_eq!(launches[1].args[1], KernelArg::Int(9));
        }
        let finalize = launches.last().unwrap();
        assert_eq!(finalize.args.last(), Some(&KernelArg::Ptr(buf.grad)));
        assert_eq!(finalize.args[13], KernelArg::Int(i32::from(!variant_in)));
    }
}

#[test]
fn class_index_with_labels_and_a_queue() {
    // B = 3, V = 2, labels [7, 7, 9]; queue labels [9, 5]. Rows: j = v·B + b, then keys.
    let p = Problem::new(3, 2, 4, 2, ContrastMode::All).unwrap();
    let idx = ClassIndex::new(&p, Some(&[7, 7, 9]), &[9, 5]).unwrap();
    assert_eq!(idx.cls, vec![0, 0, 1, 0, 0, 1, 1, 2]);
    assert_eq!(idx.classes, 3);
    // class 0 has 4 rows (3 positives each), class 1 has 3 (2 each).
    assert_eq!(idx.npos, vec![3, 3, 2, 3, 3, 2]);
    assert_eq!(idx.anchors_with_positives, 6);
    assert_eq!(idx.seg, vec![0, 4, 7, 8]);
    assert_eq!(idx.perm, vec![0, 1, 3, 4, 2, 5, 6, 7]);
    // ContrastMode::One with V = 1 and unique labels: nobody has a positive.
    let p = Problem::new(3, 1, 4, 0, ContrastMode::One).unwrap();
    let idx = ClassIndex::new(&p, Some(&[1, 2, 3]), &[]).unwrap();
    assert_eq!(idx.anchors_with_positives, 0);
    assert_eq!(idx.gradient_coefficients(1.0), vec![0.0; 3]);
}

#[test]
fn class_index_without_labels_makes_queue_keys_pure_negatives() {
    let p = Problem::new(3, 2, 4, 2, ContrastMode::One).unwrap();
    let idx = ClassIndex::new(&p, None, &[0, 1]).unwrap();
    assert_eq!(idx.cls, vec![0, 1, 2, 0, 1, 2, 3, 4]);
    assert_eq!(idx.npos, vec![1, 1, 1]);
    assert_eq!(idx.classes, 5);
    assert_eq!(idx.seg, vec![0, 2, 4, 6, 7, 8]);
    let err = ClassIndex::new(&p, Some(&[1, 2]), &[0, 1]).unwrap_err();
    assert!(matches!(
        err,
        LossError::ShapeMismatch {
            what: "labels length",
            ..
        }
    ));
}

#[test]
fn gradient_coefficient_is_scale_over_anchors_and_temperature() {
    let c = gradient_coefficient(0.1 / 0.07, 0.1, 8);
    assert!((c - (0.1 / 0.07) / (8.0 * 0.1)).abs() < 1e-12);
    assert_eq!(gradient_coefficient(1.0, 0.1, 0), 0.0);
}

#[test]
fn the_backend_exists_in_every_build_and_fails_with_a_typed_error_without_cuda() {
    #[cfg(not(feature = "cuda"))]
    {
        let err = super::CudaBackend::new(0).unwrap_err();
        assert!(
            matches!(err, LossError::CudaUnavailable(ref m) if m.contains("not compiled with CUDA"))
        );
    }
    #[cfg(feature = "cuda")]
    {
        // SAFETY: only tries to dlopen the driver library.
        let driver = unsafe { cudarc::driver::sys::is_culib_present() };
        match super::CudaBackend::new(0) {
            Ok(backend) => assert!(driver, "a backend without a driver: {backend:?}"),
            Err(LossError::CudaUnavailable(message)) => {
                if !driver {
                    assert!(message.contains("libcuda"), "{message}");
                }
            }
            Err(other) => panic!("expected CudaUnavailable, got {other}"),
        }
    }
}
