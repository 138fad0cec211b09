//! Every bad input gives its typed error, from `validate` and from the backend, never a panic.

use ndarray::{Array2, Array3};
use supcon_loss::{
    validate, CpuBackend, LossError, Queue, SupConBackend, SupConInput, SupConOptions,
};

fn features(batch: usize, views: usize, dim: usize) -> Array3<f32> {
    Array3::from_shape_fn((batch, views, dim), |(b, v, d)| {
        ((b * 31 + v * 7 + d * 3) as f32 * 0.37).sin() + 0.1
    })
}

/// Runs `validate` and the CPU backend; both must give the same error.
fn error_of(input: &SupConInput<'_>, options: &SupConOptions) -> LossError {
    let from_validate = validate(input, options).expect_err("invalid input accepted by validate");
    let from_backend = CpuBackend::default()
        .compute(input, options)
        .expect_err("invalid input accepted by the backend");
    assert_eq!(from_validate.to_string(), from_backend.to_string());
    from_backend
}

#[test]
fn invalid_temperatures() {
    let x = features(4, 2, 3);
    let input = SupConInput::new(x.view(), None);
    for bad in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let options = SupConOptions::simclr(bad);
        assert!(matches!(
            error_of(&input, &options),
            LossError::InvalidTemperature {
                name: "temperature",
                ..
            }
        ));
        let options = SupConOptions::default().with_base_temperature(Some(bad));
        let err = error_of(&input, &options);
        assert!(matches!(
            err,
            LossError::InvalidTemperature {
                name: "base_temperature",
                ..
            }
        ));
        assert!(err.to_string().contains("base_temperature"));
    }
}

#[test]
fn empty_axes() {
    for (shape, axis) in [
        ((0, 2, 3), "batch"),
        ((4, 0, 3), "views"),
        ((4, 2, 0), "dim"),
    ] {
        let x = Array3::<f32>::zeros(shape);
        let err = error_of(&SupConInput::new(x.view(), None), &SupConOptions::default());
        assert!(
            matches!(err, LossError::EmptyAxis { axis: a, .. } if a == axis),
            "{shape:?}: {err}"
        );
    }
}

#[test]
fn labels_length_mismatch() {
    let x = features(4, 2, 3);
    let err = error_of(
        &SupConInput::new(x.view(), Some(&[0, 1, 2])),
        &SupConOptions::default(),
    );
    assert!(matches!(
        err,
        LossError::ShapeMismatch {
            what: "labels length",
            ..
        }
    ));
    assert!(
        err.to_string().contains('3') && err.to_string().contains('4'),
        "{err}"
    );
}

#[test]
fn queue_shape_errors() {
    let x = features(4, 2, 3);
    let keys = Array2::<f32>::ones((5, 2));
    let input = SupConInput::new(x.view(), None).with_queue(Queue {
        keys: keys.view(),
        labels: &[0; 5],
    });
    let err = error_of(&input, &SupConOptions::default());
    assert!(
        matches!(
            err,
            LossError::ShapeMismatch {
                what: "queue keys dim",
                ..
            }
        ),
        "{err}"
    );

    let keys = Array2::<f32>::ones((5, 3));
    let input = SupConInput::new(x.view(), Some(&[0, 1, 2, 3])).with_queue(Queue {
        keys: keys.view(),
        labels: &[0; 4],
    });
    let err = error_of(&input, &SupConOptions::default());
    assert!(
        matches!(
            err,
            LossError::ShapeMismatch {
                what: "queue labels length",
                ..
            }
        ),
        "{err}"
    );

    let input = SupConInput::new(x.view(), Some(&[0, 1, 2, 3])).with_queue(Queue {
        keys: keys.view(),
        labels: &[],
    });
    assert_eq!(
        error_of(&input, &SupConOptions::default()),
        LossError::QueueLabelsMissing { keys: 5 }
    );

    // An empty queue is no queue.
    let keys = Array2::<f32>::zeros((0, 7));
    let input = SupConInput::new(x.view(), None).with_queue(Queue {
        keys: keys.view(),
        labels: &[],
    });
    assert!(validate(&input, &SupConOptions::default()).is_ok());
}

#[test]
fn too_few_contrast_rows() {
    let x = features(1, 1, 3);
    let err = error_of(&SupConInput::new(x.view(), None), &SupConOptions::default());
    assert_eq!(err, LossError::TooFewContrastRows { rows: 1 });
    // One key makes two rows: valid (and no positive without labels).
    let keys = Array2::<f32>::ones((1, 3));
    let input = SupConInput::new(x.view(), Some(&[1])).with_queue(Queue {
        keys: keys.view(),
        labels: &[1],
    });
    let out = CpuBackend::default()
        .compute(&input, &SupConOptions::default())
        .unwrap();
    assert_eq!(out.anchors, 1);
}

#[test]
fn non_finite_values_name_the_first_bad_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = features(4, 2, 3);
        x[[2, 1, 0]] = bad;
        x[[3, 0, 2]] = bad;
        let err = error_of(&SupConInput::new(x.view(), None), &SupConOptions::default());
        match &err {
            LossError::NonFinite { what, index, .. } => {
                assert_eq!((*what, index.as_slice()), ("features", &[2, 1, 0][..]));
            }
            other => panic!("expected NonFinite, got {other}"),
        }
        assert!(err.to_string().contains("[2, 1, 0]"), "{err}");

        let x = features(4, 2, 3);
        let mut keys = Array2::<f32>::ones((3, 3));
        keys[[1, 2]] = bad;
        let input = SupConInput::new(x.view(), None).with_queue(Queue {
            keys: keys.view(),
            labels: &[0; 3],
        });
        let err = error_of(&input, &SupConOptions::default());
        assert!(
            matches!(&err, LossError::NonFinite { what: "queue keys", index, .. } if index == &[1, 2]),
            "{err}"
        );
    }
}

#[test]
fn zero_norm_rows_with_normalize() {
    let options = SupConOptions::default().with_normalize(true);
    let mut x = features(4, 2, 3);
    x.slice_mut(ndarray::s![1, 1, ..]).fill(0.0);
    let err = error_of(&SupConInput::new(x.view(), None), &options);
    assert_eq!(
        err,
        LossError::ZeroNorm {
            what: "features",
            index: vec![1, 1]
        }
    );
    // Without normalize a zero row is legal.
    assert!(validate(&SupConInput::new(x.view(), None), &SupConOptions::default()).is_ok());

    let x = features(4, 2, 3);
    let mut keys = Array2::<f32>::ones((3, 3));
    keys.row_mut(2).fill(0.0);
    let input = SupConInput::new(x.view(), None).with_queue(Queue {
        keys: keys.view(),
        labels: &[0; 3],
    });
    assert_eq!(
        error_of(&input, &options),
        LossError::ZeroNorm {
            what: "queue keys",
            index: vec![2]
        }
    );
}

#[test]
fn overflowing_similarities_are_an_error_not_a_nan() {
    let x = Array3::from_elem((2, 2, 2), 3.0e19f32);
    let err = CpuBackend::default()
        .compute(&SupConInput::new(x.view(), None), &SupConOptions::default())
        .unwrap_err();
    assert!(matches!(err, LossError::Overflow { .. }), "{err}");
}

#[test]
fn cuda_stub_or_device_reports_a_typed_error_without_a_gpu() {
    // On a machine without a GPU (or without the feature) this is CudaUnavailable; with a GPU it
    // may succeed, which is fine too.
    if let Err(err) = supcon_loss::cuda::CudaBackend::new(0) {
        assert!(matches!(err, LossError::CudaUnavailable(_)), "{err}");
    }
}
