//! The one way into autograd, `LossOp::autograd`: for every loss, the `cpu` backend (host
//! copies, the CPU computation, the gradient surrogate) and the `tch` backend (the loss written
//! in libtorch) give the same loss and the same gradients in every input that has one; the
//! surrogate's value is the CPU loss exactly; bad inputs give the CPU's error through either
//! door, and a backend a loss lacks says so.
#![cfg(feature = "tch")]

use supcon_loss::{
    Backend, CmcOp, CmcOptions, CpcOp, CpcOptions, InfoNceOp, InfoNceOptions, InvSpreadOp,
    InvSpreadOptions, LossError, LossOp, NceOp, NceOptions, SupConOp, SupConOptions, SwavOp,
    SwavOptions,
};
use tch::{Kind, Tensor};

/// A deterministic `shape` tensor of values in about [−1, 1].
fn values(shape: &[i64], seed: i64) -> Tensor {
    let n: i64 = shape.iter().product();
    ((Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) * 0.37 + seed as f64).sin() + 0.05)
        .reshape(shape)
}

/// The loss `f` gives on fresh leaf copies of `inputs`, and each input's gradient after
/// `backward()` (zeros where the loss has none).
fn loss_and_grads(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) -> (f64, Vec<Tensor>) {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.detach().copy().set_requires_grad(true))
        .collect();
    let loss = f(&leaves);
    loss.backward();
    let grads = leaves
        .iter()
        .map(|t| {
            let g = t.grad();
            if g.defined() {
                g
            } else {
                t.zeros_like()
            }
        })
        .collect();
    (loss.double_value(&[]), grads)
}

/// `f` on the `cpu` and the `tch` backend: the same loss (1e-5 relative) and gradients (1e-4
/// of the largest); returns the cpu loss.
fn same_on_both(case: &str, inputs: &[Tensor], f: impl Fn(&[Tensor], Backend) -> Tensor) -> f64 {
    let (cpu, cpu_grads) = loss_and_grads(inputs, |x| f(x, Backend::Cpu));
    let (tch, tch_grads) = loss_and_grads(inputs, |x| f(x, Backend::Tch { cuda: None }));
    assert!(
        (cpu - tch).abs() <= 1e-5 * cpu.abs().max(1.0),
        "{case}: cpu {cpu} against tch {tch}"
    );
    for (i, (a, b)) in cpu_grads.iter().zip(&tch_grads).enumerate() {
        let scale = b.abs().max().double_value(&[]).max(1e-6);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4 * scale,
            "{case}: input {i}: |Δgrad| {diff} of {scale}"
        );
    }
    cpu
}

#[test]
fn every_loss_enters_autograd_alike_on_the_cpu_and_tch_backends() {
    let supcon = SupConOp(SupConOptions::new(0.1));
    let labels = Tensor::from_slice(&[0i64, 1, 0, -1, 2, 1]);
    let key_labels = Tensor::from_slice(&[1i64, 2, 0]);
    let loss = same_on_both(
        "supcon",
        &[values(&[6, 2, 8], 1), values(&[3, 8], 2)],
        |x, backend| {
            supcon
                .autograd(&(&x[0], Some(&labels), Some((&x[1], &key_labels))), backend)
                .unwrap()
                .0
        },
    );
    // The surrogate's value is the CPU loss, to the bit.
    let features = values(&[6, 2, 8], 1);
    let keys = values(&[3, 8], 2);
    let host = supcon_loss::supcon::tensor::HostSupCon::copy(
        &features,
        Some(&labels),
        Some((&keys, &key_labels)),
    )
    .unwrap();
    assert_eq!(loss, supcon.cpu_fwd(&host.input()).unwrap().loss);

    let infonce = InfoNceOp(InfoNceOptions::new(0.2));
    same_on_both(
        "infonce",
        &[values(&[5, 8], 3), values(&[5, 8], 4), values(&[7, 8], 5)],
        |x, backend| infonce.autograd(&(&x[0], &x[1], &x[2]), backend).unwrap(),
    );
    let nce = NceOp(NceOptions::new(0.07).with_dataset_size(100));
    same_on_both(
        "nce",
        &[
            values(&[4, 8], 6),
            values(&[4, 8], 7),
            values(&[4, 3, 8], 8),
        ],
        |x, backend| nce.autograd(&(&x[0], &x[1], &x[2]), backend).unwrap().loss,
    );
    let swav = SwavOp(SwavOptions::default().with_normalize(true));
    same_on_both(
        "swav",
        &[values(&[4, 3, 8], 9), values(&[5, 8], 10)],
        |x, backend| swav.autograd(&(&x[0], &x[1], None), backend).unwrap(),
    );
    let cmc = CmcOp(CmcOptions::new(0.1).with_normalize(true));
    same_on_both("cmc", &[values(&[2, 6, 8], 11)], |x, backend| {
        cmc.autograd(&&x[0], backend).unwrap()
    });
    let invspread = InvSpreadOp(InvSpreadOptions::new(0.2));
    same_on_both("invspread", &[values(&[4, 2, 8], 14)], |x, backend| {
        invspread.autograd(&&x[0], backend).unwrap()
    });
    let cpc = CpcOp(CpcOptions::default().with_normalize(true));
    same_on_both(
        "cpc",
        &[values(&[2, 4, 2, 8], 12), values(&[2, 4, 8], 13)],
        |x, backend| cpc.autograd(&(&x[0], &x[1]), backend).unwrap(),
    );
}

#[test]
fn bad_tensors_give_the_cpu_error_through_either_door_and_a_missing_backend_says_so() {
    let op = CmcOp(CmcOptions::new(0.1));
    let views = values(&[2, 4, 8], 1);
    let _ = views.get(1).get(2).get(3).fill_(f64::NAN);
    let cpu = op.autograd(&&views, Backend::Cpu).unwrap_err();
    let tch = op
        .autograd(&&views, Backend::Tch { cuda: None })
        .unwrap_err();
    assert!(matches!(cpu, LossError::NonFinite { .. }), "{cpu:?}");
    assert_eq!(format!("{cpu:?}"), format!("{tch:?}"));
    // A 2-d tensor where CMC wants [V, B, D]: a shape error naming the views, not a panic.
    let flat = values(&[4, 8], 2);
    let err = op.autograd(&&flat, Backend::Cpu).unwrap_err();
    assert!(err.to_string().contains("views"), "{err}");
    // CMC has no CUDA kernels: Unsupported, naming the loss and the backend.
    let err = op
        .autograd(&&values(&[2, 4, 8], 3), Backend::cuda(0))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LossError::Unsupported {
                loss: "cmc",
                backend: "cuda",
                ..
            }
        ),
        "{err:?}"
    );
}
