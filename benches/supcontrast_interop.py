#!/usr/bin/env python3
"""Reference side of `cargo xtask bench interop`: a real PyTorch SupContrast model whose weights
supcon-models must load, by name and shape, and whose projections it must reproduce.

- Model: SupContrast's `SupConResNet(name='resnet18', head='mlp', feat_dim=128)`, transcribed
  from HobbitLong/SupContrast's networks/resnet_big.py with its module names (so the state
  dict keys are SupContrast's: encoder.conv1.weight, encoder.layer1.0.shortcut.0.weight,
  head.0.weight, ...): BasicBlock / Bottleneck, CIFAR stem (3x3 convolution, stride 1, no
  max-pool), global average pooling, SupContrast's init (kaiming_normal_ fan_out for the
  convolutions, BN scale 1 / shift 0, PyTorch's default for the linear layers), and
  forward = F.normalize(head(encoder(x)), dim=1). Two departures, neither touching names or
  shapes: `SupConResNet` passes `in_channel` (--in-channel) on to the encoder (SupContrast's
  ResNet takes it, its SupConResNet always uses 3), and `is_last` / `preact`, which
  SupContrast never switches on, are left out.
- State: torch.manual_seed(--seed); BN scales and shifts are then drawn at random
  (U(0.5, 1.5), N(0, 0.1)), so that a swapped weight / bias would show; --train-passes
  training-mode forward passes on random batches (no optimiser step) move the BN running
  statistics off their initial 0 / 1 and count num_batches_tracked.
- Export, in eval mode: the full state_dict() (parameters and BN buffers, num_batches_tracked
  included) with safetensors.torch.save_file to <out-dir>/supcontrast.safetensors; a batch
  of --batch random inputs [N, C, H, W] to inputs.npy; the eval-mode encoder features
  [N, dim_in] to features.npy and projections [N, feat_dim] to projections.npy (float32).
- torch.set_num_threads(--threads, default 2).

--list-keys prints the state dict's names, shapes and dtypes (one per line) and exits: the
source of the list that crates/supcon-models/tests/supcontrast_names.rs checks without Python.

Prints one JSON line: {"tensors": ..., "parameters": ..., "safetensors": ..., ...}.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)

        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, in_channel=3, zero_init_residual=False):
        super().__init__()
        self.in_planes = 64

        self.conv1 = nn.Conv2d(in_channel, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for i in range(num_blocks):
            layers.append(block(self.in_planes, planes, strides[i]))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = self.avgpool(out)
        return torch.flatten(out, 1)


def resnet18(**kwargs):
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs):
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs):
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnet101(**kwargs):
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


model_dict = {
    "resnet18": [resnet18, 512],
    "resnet34": [resnet34, 512],
    "resnet50": [resnet50, 2048],
    "resnet101": [resnet101, 2048],
}


class SupConResNet(nn.Module):
    """backbone + projection head"""

    def __init__(self, name="resnet50", head="mlp", feat_dim=128, in_channel=3):
        super().__init__()
        model_fun, dim_in = model_dict[name]
        self.encoder = model_fun(in_channel=in_channel)
        if head == "linear":
            self.head = nn.Linear(dim_in, feat_dim)
        elif head == "mlp":
            self.head = nn.Sequential(
                nn.Linear(dim_in, dim_in),
                nn.ReLU(inplace=True),
                nn.Linear(dim_in, feat_dim),
            )
        else:
            raise NotImplementedError("head not supported: {}".format(head))

    def forward(self, x):
        feat = self.encoder(x)
        return F.normalize(self.head(feat), dim=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default="target/interop",
                        help="folder for supcontrast.safetensors and the .npy files")
    parser.add_argument("--name", default="resnet18", choices=sorted(model_dict))
    parser.add_argument("--head", default="mlp", choices=["mlp", "linear"])
    parser.add_argument("--feat-dim", type=int, default=128)
    parser.add_argument("--in-channel", type=int, default=3)
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--batch", type=int, default=16, help="images compared in eval mode")
    parser.add_argument("--train-passes", type=int, default=10,
                        help="training-mode forward passes that set the BN running statistics")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--list-keys", action="store_true",
                        help="print the state dict's names, shapes and dtypes, then exit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = SupConResNet(name=args.name, head=args.head, feat_dim=args.feat_dim,
                         in_channel=args.in_channel)
    if args.list_keys:
        for key, value in model.state_dict().items():
            print(key, list(value.shape), str(value.dtype).replace("torch.", ""))
        return

    start = time.perf_counter()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    model.train()
    shape = (args.in_channel, args.size, args.size)
    with torch.no_grad():
        for _ in range(args.train_passes):
            model(0.2 + 0.8 * torch.randn(args.train_batch, *shape))
    model.eval()
    inputs = torch.randn(args.batch, *shape)
    with torch.no_grad():
        features = model.encoder(inputs)
        projections = model(inputs)

    os.makedirs(args.out_dir, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights = os.path.join(args.out_dir, "supcontrast.safetensors")
    save_file(state, weights)
    np.save(os.path.join(args.out_dir, "inputs.npy"), inputs.numpy().astype(np.float32))
    np.save(os.path.join(args.out_dir, "features.npy"), features.numpy().astype(np.float32))
    np.save(os.path.join(args.out_dir, "projections.npy"), projections.numpy().astype(np.float32))

    tracked = [int(v) for k, v in state.items() if k.endswith("num_batches_tracked")]
    result = {
        "safetensors": weights,
        "name": args.name,
        "head": args.head,
        "feat_dim": args.feat_dim,
        "in_channel": args.in_channel,
        "tensors": len(state),
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_batches_tracked": max(tracked) if tracked else 0,
        "batch": args.batch,
        "size": args.size,
        "feature_abs_max": round(features.abs().max().item(), 6),
        "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 3),
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"SupConResNet({args.name}, {args.head}, {args.feat_dim}): {len(state)} tensors "
              f"written to {weights}; {args.batch} inputs, features and projections beside it")


if __name__ == "__main__":
    main()
