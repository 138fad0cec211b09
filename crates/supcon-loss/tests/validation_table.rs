//! One table of bad inputs through every entry point this build has — the CPU backend, the
//! libtorch backend and tensor function (feature `tch`), the CUDA backend and its zero-copy
//! tensor path (feature `cuda`, where a GPU answers) — each must give the CPU backend's error,
//! variant and fields alike. And the inputs every backend must accept (a SimCLR queue needs no
//! labels).

use ndarray::{Array2, Array3};
use supcon_loss::{
    Backend, CpuBackend, LossError, LossOp, Queue, SupConBackend, SupConInput, SupConOp,
    SupConOptions,
};

/// An owned loss input.
#[derive(Clone, Debug)]
struct Case {
    name: &'static str,
    features: Array3<f32>,
    labels: Option<Vec<i64>>,
    queue: Option<(Array2<f32>, Vec<i64>)>,
    options: SupConOptions,
}

impl Case {
    fn input(&self) -> SupConInput<'_> {
        SupConInput {
            features: self.features.view(),
            labels: self.labels.as_deref(),
            queue: self.queue.as_ref().map(|(keys, labels)| Queue {
                keys: keys.view(),
                labels,
            }),
        }
    }
}

fn features(batch: usize, views: usize, dim: usize) -> Array3<f32> {
    Array3::from_shape_fn((batch, views, dim), |(b, v, d)| {
        ((b * 5 + v * 3 + d) as f32 * 0.41).sin() + 0.1
    })
}

fn keys(k: usize, dim: usize) -> Array2<f32> {
    Array2::from_shape_fn((k, dim), |(j, d)| ((j * 7 + d) as f32 * 0.3).cos())
}

fn case(name: &'static str) -> Case {
    Case {
        name,
        features: features(4, 2, 3),
        labels: Some(vec![0, 1, 0, 1]),
        queue: None,
        options: SupConOptions::default(),
    }
}

/// Inputs every backend must reject, each with a different rule.
fn bad_inputs() -> Vec<Case> {
    let mut table = Vec::new();
    let mut c = case("temperature zero");
    c.options = c.options.with_temperature(0.0);
    table.push(c);
    let mut c = case("temperature NaN");
    c.options = c.options.with_temperature(f64::NAN);
    table.push(c);
    let mut c = case("base temperature negative");
    c.options = c.options.with_base_temperature(Some(-1.0));
    table.push(c);
    let mut c = case("empty batch");
    c.features = features(0, 2, 3);
    c.labels = Some(vec![]);
    table.push(c);
    let mut c = case("labels length");
    c.labels = Some(vec![0, 1, 0]);
    table.push(c);
    let mut c = case("queue dim");
    c.queue = Some((keys(3, 5), vec![0, 1, 2]));
    table.push(c);
    let mut c = case("queue labels missing");
    c.queue = Some((keys(3, 3), vec![]));
    table.push(c);
    let mut c = case("queue labels length");
    c.queue = Some((keys(3, 3), vec![0, 1]));
    table.push(c);
    let mut c = case("NaN feature");
    c.features[[2, 1, 0]] = f32::NAN;
    table.push(c);
    let mut c = case("infinite feature");
    c.features[[0, 0, 2]] = f32::NEG_INFINITY;
    table.push(c);
    let mut c = case("infinite queue key");
    let mut k = keys(3, 3);
    k[[1, 2]] = f32::INFINITY;
    c.queue = Some((k, vec![0, 1, 2]));
    table.push(c);
    let mut c = case("too few contrast rows");
    c.features = features(1, 1, 3);
    c.labels = Some(vec![0]);
    table.push(c);
    let mut c = case("zero row with normalize");
    c.features.slice_mut(ndarray::s![3, 0, ..]).fill(0.0);
    c.options = c.options.with_normalize(true);
    table.push(c);
    table
}

/// Inputs every backend must accept.
fn good_inputs() -> Vec<Case> {
    let mut simclr_queue = case("SimCLR with a queue and no queue labels");
    simclr_queue.labels = None;
    simclr_queue.queue = Some((keys(3, 3), vec![]));
    let mut supcon_queue = case("SupCon with a labelled queue");
    supcon_queue.queue = Some((keys(3, 3), vec![0, 5, 1]));
    vec![case("plain SupCon"), simclr_queue, supcon_queue]
}

/// An entry point under test: its name and the error (or success) it gives for a case.
type EntryPoint = (&'static str, Box<dyn Fn(&Case) -> Result<(), LossError>>);

fn entry_points() -> Vec<EntryPoint> {
    let mut points: Vec<EntryPoint> = vec![(
        "cpu",
        Box::new(|c: &Case| {
            CpuBackend::default()
                .compute(&c.input(), &c.options)
                .map(|_| ())
        }),
    )];
    points.push((
        "SupConOp on the cpu",
        Box::new(|c: &Case| {
            SupConOp(c.options.clone())
                .run(Backend::Cpu, &c.input())
                .map(|_| ())
        }),
    ));
    #[cfg(feature = "tch")]
    {
        points.push((
            "SupConOp on tch",
            Box::new(|c: &Case| {
                SupConOp(c.options.clone())
                    .run(Backend::Tch { cuda: None }, &c.input())
                    .map(|_| ())
            }),
        ));
        points.push((
            "tch backend",
            Box::new(|c: &Case| {
                supcon_loss::TchBackend::default()
                    .compute(&c.input(), &c.options)
                    .map(|_| ())
            }),
        ));
        points.push((
            "tch tensor function",
            Box::new(|c: &Case| {
                let (features, labels, queue) = tensors(c, tch::Device::Cpu);
                supcon_loss::supcon_loss_tensor(
                    &features,
                    labels.as_ref(),
                    queue.as_ref().map(|(k, l)| (k, l)),
                    &c.options,
                )
                .map(|_| ())
            }),
        ));
    }
    if let Ok(cuda) = supcon_loss::cuda::CudaBackend::new(0) {
        let cuda = std::sync::Arc::new(cuda);
        let backend = cuda.clone();
        points.push((
            "cuda backend",
            Box::new(move |c: &Case| backend.compute(&c.input(), &c.options).map(|_| ())),
        ));
        #[cfg(feature = "tch")]
        points.push((
            "cuda zero-copy",
            Box::new(move |c: &Case| {
                let (features, _, queue) = tensors(c, tch::Device::Cuda(0));
                let queue_labels = c.queue.as_ref().map(|(_, l)| l.as_slice());
                cuda.compute_tch(
                    &features,
                    c.labels.as_deref(),
                    queue
                        .as_ref()
                        .map(|(k, _)| (k, queue_labels.unwrap_or(&[]))),
                    &c.options,
                )
                .map(|_| ())
            }),
        ));
    } else {
        eprintln!("no CUDA backend in this build or no GPU: the CUDA entry points are not in the table run");
    }
    points
}

#[cfg(feature = "tch")]
fn tensors(
    c: &Case,
    device: tch::Device,
) -> (
    tch::Tensor,
    Option<tch::Tensor>,
    Option<(tch::Tensor, tch::Tensor)>,
) {
    let shape: Vec<i64> = c.features.shape().iter().map(|&s| s as i64).collect();
    let features = tch::Tensor::from_slice(c.features.as_slice().unwrap())
        .reshape(shape.as_slice())
        .to_device(device);
    let labels = c
        .labels
        .as_ref()
        .map(|l| tch::Tensor::from_slice(l).to_device(device));
    let queue = c.queue.as_ref().map(|(keys, labels)| {
        let (k, d) = keys.dim();
        (
            tch::Tensor::from_slice(keys.as_slice().unwrap())
                .reshape([k as i64, d as i64])
                .to_device(device),
            tch::Tensor::from_slice(labels).to_device(device),
        )
    });
    (features, labels, queue)
}

#[test]
fn every_entry_point_rejects_the_table_with_the_cpu_backends_error() {
    let points = entry_points();
    for case in bad_inputs() {
        let reference =
            points[0].1(&case).expect_err(&format!("the CPU backend accepted `{}`", case.name));
        for (name, run) in &points[1..] {
            let err = run(&case).expect_err(&format!("{name} accepted `{}`", case.name));
            // Debug text: NaN fields compare equal there, unlike `==`.
            assert_eq!(
                format!("{err:?}"),
                format!("{reference:?}"),
                "{name} on `{}`",
                case.name
            );
        }
    }
}

#[test]
fn every_entry_point_accepts_the_valid_inputs() {
    for case in good_inputs() {
        for (name, run) in &entry_points() {
            run(&case).unwrap_or_else(|e| panic!("{name} rejected `{}`: {e}", case.name));
        }
    }
}

#[test]
fn the_gradient_can_go_into_the_callers_buffer() {
    let c = case("plain SupCon");
    let want = CpuBackend::default()
        .compute(&c.input(), &c.options)
        .unwrap();
    let mut buffer = Array3::<f32>::from_elem(c.features.dim(), 7.0);
    let (loss, anchors) = CpuBackend::default()
        .compute_into(&c.input(), &c.options, buffer.view_mut())
        .unwrap();
    assert_eq!((loss, anchors), (want.loss, want.anchors));
    assert_eq!(buffer, want.grad);
    let mut wrong = Array3::<f32>::from_elem((4, 2, 2), 7.0);
    let err = CpuBackend::default()
        .compute_into(&c.input(), &c.options, wrong.view_mut())
        .unwrap_err();
    assert!(err.to_string().contains("gradient buffer shape"), "{err}");
    assert!(
        wrong.iter().all(|&g| g == 7.0),
        "a refused buffer was written"
    );
}
