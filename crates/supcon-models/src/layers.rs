//! The building blocks, named like PyTorch's modules so that state dicts line up.

use tch::nn::{self, Init, Module, ModuleT};
use tch::{Kind, Tensor};

use crate::Normalization;

/// SupContrast's convolution init: `kaiming_normal_(mode='fan_out', nonlinearity='relu')`.
const CONV_INIT: Init = Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

/// A bias-free square convolution (every convolution in a ResNet is followed by a BN).
pub(crate) fn conv(
    path: nn::Path<'_>,
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: CONV_INIT,
        ..Default::default()
    };
    nn::conv2d(path, c_in, c_out, kernel, config)
}

/// `nn.BatchNorm2d`: weight, bias, running_mean, running_var and the int64
/// `num_batches_tracked` that PyTorch keeps (tch's own batch norm has no counter, and a
/// SupContrast state dict would then not load strictly).
#[derive(Debug)]
pub(crate) struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    pub(crate) const MOMENTUM: f64 = 0.1;
    pub(crate) const EPS: f64 = 1e-5;

    /// Weight 1 (or 0 with `zero_weight`, the zero-init of the residual branch), bias 0.
    pub(crate) fn new(path: nn::Path<'_>, channels: i64, zero_weight: bool) -> Self {
        let weight_init = Init::Const(if zero_weight { 0.0 } else { 1.0 });
        BatchNorm2d {
            weight: path.var("weight", &[channels], weight_init),
            bias: path.var("bias", &[channels], Init::Const(0.0)),
            running_mean: path.zeros_no_train("running_mean", &[channels]),
            running_var: path.ones_no_train("running_var", &[channels]),
            num_batches_tracked: path.add(
                "num_batches_tracked",
                Tensor::zeros([], (Kind::Int64, path.device())),
                false,
            ),
        }
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            // Only bookkeeping (PyTorch uses it when momentum is None); keeps checkpoints
            // comparable with PyTorch's.
            tch::no_grad(|| {
                let mut counter = self.num_batches_tracked.shallow_clone();
                let _ = counter.g_add_scalar_(1);
            });
        }
        Tensor::batch_norm(
            xs,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            Self::MOMENTUM,
            Self::EPS,
            true,
        )
    }
}

/// `nn.GroupNorm(groups, channels)`: weight and bias per channel, statistics of each image's
/// channel groups (no running statistics, the same in training and evaluation).
#[derive(Debug)]
pub(crate) struct GroupNorm2d {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
}

impl GroupNorm2d {
    /// The usual 32 groups, or the largest power of two below that divides `channels`.
    fn groups(channels: i64) -> i64 {
        (0..=5)
            .rev()
            .map(|p| 1i64 << p)
            .find(|g| channels % g == 0)
            .unwrap_or(1)
    }

    pub(crate) fn new(path: nn::Path<'_>, channels: i64, zero_weight: bool) -> Self {
        let weight_init = Init::Const(if zero_weight { 0.0 } else { 1.0 });
        GroupNorm2d {
            weight: path.var("weight", &[channels], weight_init),
            bias: path.var("bias", &[channels], Init::Const(0.0)),
            groups: Self::groups(channels),
        }
    }
}

impl Module for GroupNorm2d {
    fn forward(&self, xs: &Tensor) -> Tensor {
        Tensor::group_norm(
            xs,
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            BatchNorm2d::EPS,
            true,
        )
    }
}

/// The normalization after a convolution ([`crate::Normalization`]), under the same names
/// (`bn1.weight`, ...) whichever it is.
#[derive(Debug)]
pub(crate) enum Norm2d {
    Batch(BatchNorm2d),
    Group(GroupNorm2d),
}

impl Norm2d {
    pub(crate) fn new(
        kind: Normalization,
        path: nn::Path<'_>,
        channels: i64,
        zero_weight: bool,
    ) -> Self {
        match kind {
            Normalization::Batch => Norm2d::Batch(BatchNorm2d::new(path, channels, zero_weight)),
            Normalization::Group => Norm2d::Group(GroupNorm2d::new(path, channels, zero_weight)),
        }
    }
}

impl ModuleT for Norm2d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Norm2d::Batch(bn) => bn.forward_t(xs, train),
            Norm2d::Group(gn) => gn.forward(xs),
        }
    }
}

/// `nn.Linear` with PyTorch's default init (tch's `nn::linear` uses the same bounds).
pub(crate) fn linear(path: nn::Path<'_>, d_in: i64, d_out: i64) -> nn::Linear {
    nn::linear(path, d_in, d_out, Default::default())
}

/// `F.normalize(x, dim=1)`: x / max(‖x‖₂, 1e-12) row by row.
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    let norms = xs
        .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    xs / norms
}

/// Runs a linear layer (a `Module`) inside `ModuleT` code without the train flag.
pub(crate) fn apply_linear(layer: &nn::Linear, xs: &Tensor) -> Tensor {
    layer.forward(xs)
}
