//! ResNet encoders in the layout of SupContrast's `networks/resnet_big.py`.
//!
//! Names: `conv1`, `bn1`, `layer{1..}.{block}.{conv1,bn1,conv2,bn2[,conv3,bn3]}`, and
//! `layer{s}.{b}.shortcut.0` / `.shortcut.1` for the projection shortcut (SupContrast's
//! `nn.Sequential(conv, bn)`). The encoder ends with global average pooling: its output is
//! `[N, feature_dim]` (no classifier).

use crate::config::{Normalization, Stem};
use crate::error::ModelError;
use crate::layers::{conv, Norm2d};
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

/// The residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34 and the small CIFAR nets); expansion 1.
    Basic,
    /// 1×1 → 3×3 (strided) → 1×1 convolutions; expansion 4 (ResNet-50/101).
    Bottleneck,
}

impl BlockKind {
    /// Output channels per unit of stage width.
    pub fn expansion(self) -> i64 {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A complete, architecture-independent description of a ResNet encoder. Parameter count
/// and FLOPs are computed from it analytically, without building tensors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResNetSpec {
    pub block: BlockKind,
    /// Blocks in each stage; stage 0 keeps the resolution, every later stage halves it.
    pub blocks_per_stage: Vec<usize>,
    /// Width (`planes`) of each stage; the stem has the width of stage 0.
    pub widths: Vec<i64>,
    pub in_channels: i64,
    pub stem: Stem,
    pub zero_init_residual: bool,
    /// BatchNorm or GroupNorm after each convolution.
    pub norm: Normalization,
}

/// Output size of a convolution or pooling along one axis.
fn out_size(size: i64, kernel: i64, stride: i64, padding: i64) -> i64 {
    (size + 2 * padding - kernel) / stride + 1
}

impl ResNetSpec {
    /// Channels of the pooled feature vector (512 for ResNet-18, 2048 for ResNet-50).
    pub fn feature_dim(&self) -> i64 {
        self.widths.last().copied().unwrap_or(0) * self.block.expansion()
    }

    fn stem_kernel(&self) -> (i64, i64, i64) {
        match self.stem {
            Stem::Cifar => (3, 1, 1),
            Stem::Imagenet => (7, 2, 3),
        }
    }

    /// Trainable parameters (convolution weights, BN scales and shifts); BN running
    /// statistics are buffers and not counted, as in PyTorch's `model.parameters()`.
    pub fn param_count(&self) -> u64 {
        let bn = |c: i64| 2 * c;
        let (k, _, _) = self.stem_kernel();
        let width0 = self.widths.first().copied().unwrap_or(0);
        let mut total = self.in_channels * width0 * k * k + bn(width0);
        let mut in_planes = width0;
        let expansion = self.block.expansion();
        for (stage, (&blocks, &planes)) in
            self.blocks_per_stage.iter().zip(&self.widths).enumerate()
        {
            for b in 0..blocks {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let out = planes * expansion;
                total += match self.block {
                    BlockKind::Basic => {
                        in_planes * planes * 9 + bn(planes) + planes * planes * 9 + bn(planes)
                    }
                    BlockKind::Bottleneck => {
                        in_planes * planes
                            + bn(planes)
                            + planes * planes * 9
                            + bn(planes)
                            + planes * out
                            + bn(out)
                    }
                };
                if stride != 1 || in_planes != out {
                    total += in_planes * out + bn(out);
                }
                in_planes = out;
            }
        }
        total as u64
    }

    /// Multiply-accumulates of one forward pass of one image of `input_hw` = [height, width]:
    /// convolutions only (BN, ReLU, additions and pooling are < 1% and not counted).
    pub fn macs(&self, input_hw: [i64; 2]) -> u64 {
        let [mut h, mut w] = input_hw;
        let (k, s, p) = self.stem_kernel();
        let width0 = self.widths.first().copied().unwrap_or(0);
        h = out_size(h, k, s, p);
        w = out_size(w, k, s, p);
        let mut total = h * w * width0 * self.in_channels * k * k;
        if self.stem == Stem::Imagenet {
            h = out_size(h, 3, 2, 1);
            w = out_size(w, 3, 2, 1);
        }
        let mut in_planes = width0;
        let expansion = self.block.expansion();
        for (stage, (&blocks, &planes)) in
            self.blocks_per_stage.iter().zip(&self.widths).enumerate()
        {
            for b in 0..blocks {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let out = planes * expansion;
                let (h2, w2) = (out_size(h, 3, stride, 1), out_size(w, 3, stride, 1));
                total += match self.block {
                    BlockKind::Basic => h2 * w2 * (planes * in_planes * 9 + planes * planes * 9),
                    BlockKind::Bottleneck => {
                        h * w * planes * in_planes + h2 * w2 * (planes * planes * 9 + out * planes)
                    }
                };
                if stride != 1 || in_planes != out {
                    total += h2 * w2 * out * in_planes;
                }
                in_planes = out;
                h = h2;
                w = w2;
            }
        }
        total as u64
    }

    /// FLOPs of one forward pass of one image: 2 × [`Self::macs`].
    pub fn flops(&self, input_hw: [i64; 2]) -> u64 {
        2 * self.macs(input_hw)
    }
}

#[derive(Debug)]
struct Shortcut {
    conv: nn::Conv2D,
    bn: Norm2d,
}

#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, Norm2d)>,
    shortcut: Option<Shortcut>,
}

impl Block {
    fn new(
        path: &nn::Path<'_>,
        kind: BlockKind,
        in_planes: i64,
        planes: i64,
        stride: i64,
        zero_init: bool,
        norm: Normalization,
    ) -> Self {
        let out = planes * kind.expansion();
        // (c_in, c_out, kernel, stride, padding) of each convolution, in PyTorch's order.
        let shapes: Vec<(i64, i64, i64, i64, i64)> = match kind {
            BlockKind::Basic => vec![(in_planes, planes, 3, stride, 1), (planes, planes, 3, 1, 1)],
            BlockKind::Bottleneck => vec![
                (in_planes, planes, 1, 1, 0),
                (planes, planes, 3, stride, 1),
                (planes, out, 1, 1, 0),
            ],
        };
        let last = shapes.len() - 1;
        let convs = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (c_in, c_out, k, s, p))| {
                let n = i + 1;
                (
                    conv(path / format!("conv{n}"), c_in, c_out, k, s, p),
                    Norm2d::new(norm, path / format!("bn{n}"), c_out, zero_init && i == last),
                )
            })
            .collect();
        let shortcut = (stride != 1 || in_planes != out).then(|| {
            let sc = path / "shortcut";
            Shortcut {
                conv: conv(&sc / "0", in_planes, out, 1, stride, 0),
                bn: Norm2d::new(norm, &sc / "1", out, false),
            }
        });
        Block { convs, shortcut }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut out = xs.shallow_clone();
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            out = bn.forward_t(&c.forward(&out), train);
            if i != last {
                out = out.relu();
            }
        }
        let identity = match &self.shortcut {
            Some(sc) => sc.bn.forward_t(&sc.conv.forward(xs), train),
            None => xs.shallow_clone(),
        };
        (out + identity).relu()
    }
}

/// A ResNet encoder: stem, residual stages, global average pooling. Implements
/// [`ModuleT`]: `forward_t(images [N, C, H, W], train) -> features [N, feature_dim]`.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: Norm2d,
    stages: Vec<Vec<Block>>,
    spec: ResNetSpec,
}

impl ResNet {
    /// Builds the encoder's variables under `path` (`path/conv1/weight`, ...).
    pub fn new(path: &nn::Path<'_>, spec: &ResNetSpec) -> Self {
        let (k, s, p) = spec.stem_kernel();
        let width0 = spec.widths.first().copied().unwrap_or(0);
        let conv1 = conv(path / "conv1", spec.in_channels, width0, k, s, p);
        let bn1 = Norm2d::new(spec.norm, path / "bn1", width0, false);
        let mut in_planes = width0;
        let mut stages = Vec::with_capacity(spec.widths.len());
        for (stage, (&blocks, &planes)) in
            spec.blocks_per_stage.iter().zip(&spec.widths).enumerate()
        {
            let layer = path / format!("layer{}", stage + 1);
            let mut stage_blocks = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                stage_blocks.push(Block::new(
                    &(&layer / b),
                    spec.block,
                    in_planes,
                    planes,
                    stride,
                    spec.zero_init_residual,
                    spec.norm,
                ));
                in_planes = planes * spec.block.expansion();
            }
            stages.push(stage_blocks);
        }
        ResNet {
            conv1,
            bn1,
            stages,
            spec: spec.clone(),
        }
    }

    /// The description it was built from.
    pub fn spec(&self) -> &ResNetSpec {
        &self.spec
    }

    /// Channels of the output features.
    pub fn feature_dim(&self) -> i64 {
        self.spec.feature_dim()
    }

    /// Checks that `images` is `[N, in_channels, H, W]` with N, H, W ≥ 1 (the forward pass
    /// itself, like every tch module, panics on a wrong shape).
    pub fn check_input(&self, images: &Tensor) -> Result<(), ModelError> {
        let shape = images.size();
        let ok =
            shape.len() == 4 && shape[1] == self.spec.in_channels && shape.iter().all(|&d| d >= 1);
        if ok {
            Ok(())
        } else {
            Err(ModelError::InputShape {
                shape,
                expected: format!("[batch, {}, height, width]", self.spec.in_channels),
            })
        }
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = self.bn1.forward_t(&self.conv1.forward(xs), train).relu();
        if self.spec.stem == Stem::Imagenet {
            out = out.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for stage in &self.stages {
            for block in stage {
                out = block.forward_t(&out, train);
            }
        }
        // AdaptiveAvgPool2d((1, 1)) + flatten.
        out.mean_dim([2i64, 3].as_slice(), false, out.kind())
    }
}

/// Builds a ResNet encoder from its description (the general form of the functions below).
pub fn resnet(path: &nn::Path<'_>, spec: &ResNetSpec) -> ResNet {
    ResNet::new(path, spec)
}

fn cifar(path: &nn::Path<'_>, arch: crate::Architecture, in_channels: i64) -> ResNet {
    ResNet::new(path, &arch.spec(in_channels, Stem::Cifar, false))
}

/// Widths 16/32/64, one BasicBlock per stage, CIFAR stem (≈ 78 k parameters).
pub fn resnet_tiny(path: &nn::Path<'_>, in_channels: i64) -> ResNet {
    cifar(path, crate::Architecture::ResNetTiny, in_channels)
}

/// Widths 16/32/64, two BasicBlocks per stage, CIFAR stem (≈ 175 k parameters).
pub fn resnet_small(path: &nn::Path<'_>, in_channels: i64) -> ResNet {
    cifar(path, crate::Architecture::ResNetSmall, in_channels)
}

/// ResNet-18 with SupContrast's CIFAR stem.
pub fn resnet18(path: &nn::Path<'_>, in_channels: i64) -> ResNet {
    cifar(path, crate::Architecture::ResNet18, in_channels)
}

/// ResNet-34 with SupContrast's CIFAR stem.
pub fn resnet34(path: &nn::Path<'_>, in_channels: i64) -> ResNet {
    cifar(path, crate::Architecture::ResNet34, in_channels)
}

/// ResNet-50 with SupContrast's CIFAR stem.
pub fn resnet50(path: &nn::Path<'_>, in_channels: i64) -> ResNet {
    cifar(path, crate::Architecture::ResNet50, in_channels)
}

/// ResNet-101 with SupContrast's CIFAR stem.
pub fn resnet101(path: &nn::Path<'_>, in_channels: i64) -> ResNet {
    cifar(path, crate::Architecture::ResNet101, in_channels)
}
