#!/usr/bin/env python3
"""Peer side of `cargo xtask bench methods`: SimCLR, MoCo (v1, v2) and SwAV trained with
lightly's modules (lightly 1.6.0) on a PyTorch replica of supcon's resnet-tiny, with the data,
augmentation, optimiser, steps and kNN read-out of supcon's run of the same method.

The settings are read from a resolved supcon configuration: --config FILE (the config.toml
that `supcon train` writes into its run folder: what the xtask passes, so that both sides read
one file) or --preset NAME (the preset TOML files of crates/supcon-train/src/presets/ with
their `extends` chain; default quick-cpu-<method>). Keys the TOML leaves out take supcon's
defaults (config/methods.rs, config/mod.rs), mirrored below.

From lightly (the method-specific parts):
- SimCLR: `lightly.loss.NTXentLoss(temperature=tau)`, no memory bank.
- MoCo: `NTXentLoss(temperature=tau, memory_bank_size=(queue, dim))` (its memory bank starts
  as random unit vectors, takes the keys after each loss, FIFO);
  `lightly.models.utils.deactivate_requires_grad` on the key encoder (a deep copy of the
  online encoder + head), `update_momentum(online, key, m)` after every optimiser step (the
  order of supcon's `after_step`: equivalent to lightly's examples, which update before the
  keys); `batch_shuffle` / `batch_unshuffle` for the shuffled BatchNorm.
- SwAV: `lightly.loss.SwaVLoss(temperature, sinkhorn_iterations, sinkhorn_epsilon)` and
  `lightly.models.modules.SwaVPrototypes(dim, K, n_steps_frozen_prototypes=freeze_epochs *
  steps_per_epoch)` (its own freezing: requires_grad off, so SGD skips the prototypes, no
  weight decay nor momentum, as supcon's `step_except`), `prototypes.normalize()` before each
  forward pass (supcon normalises after each step from unit initial rows: the same values at
  every forward pass).
- kNN: `lightly.utils.benchmarking.knn_predict` (its formula is supcon's eval/knn.rs: cosine
  similarity, the k most similar bank rows vote exp(sim / T) for their class), on
  L2-normalised features, in blocks of 256 queries.

As supcon runs it (crates/supcon-train/src):
- Data: Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist, or --data / $SUPCON_DATA),
  the first data.train_per_class images of each class in file order (0: all;
  Dataset::first_per_class), every one of them trained on (data.validation_fraction must be
  0, as the bench sets it for supcon: its seeded stratified split is not replicated), the
  test set (first data.test_per_class per class) for the kNN queries.
- Normalisation: the `fashion-mnist` preset normalises with the constants 0.2860 / 0.3530;
  a recipe (MoCo v2's) with the mean and population standard deviation of the training
  images' pixels (TrainData, from a 256-bin histogram; std at least 1e-3); the kNN read-out
  always with the measured ones (the `none` pipeline of pipeline/evaluate.rs).
- Augmentation: the recipes of supcon-augment's presets.rs in torchvision, two independent
  views per image: `fashion-mnist` = RandomResizedCrop(28, scale=(0.35, 1)),
  RandomHorizontalFlip(), RandomApply([ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
  Normalize; recipe steps `resized-crop:s|a..b`, `pad-crop:n`, `flip:p`, `jitter:x` (p 0.8,
  brightness and contrast; gray images have no saturation or hue), `blur:p` (SimCLR's
  GaussianBlur, kernel max(side/10, 3) made odd = 3 at 28 pixels, sigma uniform in [0.1, 2],
  reflect padding), then Normalize. --augment-backend tensor (default) runs torchvision's
  transforms on float tensors in [0, 1], as supcon-augment computes (no rounding to 8 bits
  between steps; the resize is antialiased bilinear like Pillow's); `pil` is torchvision's
  classic PIL path (8-bit images between steps, ToTensor before Normalize).
- Model: supcon-models' resnet-tiny (benches/train_pytorch.py's CifarResNet: 3x3 stem,
  16/32/64, one BasicBlock per stage, bias-free convolutions, BatchNorm) with SupContrast's
  initialisation (kaiming_normal_ fan_out / relu on convolutions, BatchNorm weight 1 bias 0;
  PyTorch's default for Linear, which tch also uses), head `mlp` (Linear d->d, ReLU,
  Linear d->projection_dim) or `linear`, L2-normalised projections.
- Forward passes: SimCLR and SwAV forward both views as one batch (BatchNorm statistics over
  2 x 256 images, as supcon's `forward_t` over the batch tensor); MoCo forwards the queries
  (view 0) alone, and the keys (view 1) through the key encoder in train mode on
  `shuffle_groups` consecutive chunks of a randomly permuted batch (chunks of
  ceil(B / groups)), put back in the images' order (MomentumEncoder::keys_shuffled); one
  direction (queries of view 0, keys of view 1), the presets' `symmetric = false`.
- tau: pretrain.temperature, else the method's default (SimCLR 0.5, MoCo v1 0.07 / v2 0.2,
  SwAV 0.1; the presets set SimCLR's to 0.1).
- Optimiser: SGD (PyTorch's rule, which supcon's optim.rs reimplements), momentum 0.9, weight
  decay 1e-4 on every parameter (BatchNorm and biases included, SwAV's prototypes once they
  are no longer frozen), the learning rate of supcon's LrSchedule per step: linear warm-up
  over round(warmup_epochs x steps_per_epoch) steps from lr x warmup_from_fraction (0.01) to
  the value the cosine has where the warm-up ends, then cosine from lr to lr x 0.1^3.
- Steps: batch 256, drop_last (floor(n / 256) steps per epoch), a fresh random order every
  epoch; the key encoder's momentum is constant, per step.
- kNN: backbone features (global average pool, BatchNorm in eval mode), L2-normalised, the
  training images without augmentation as the bank, k = eval.knn_k (20), T =
  eval.knn_temperature (0.1); top-1 and top-5 as fractions, like report.json.
- images/s: source images per second of the training loop (augmentation, forward, backward,
  optimiser, momentum update), each image counted once whatever its views: the unit of
  supcon's stage `images_per_second`. The whole loop is timed (supcon times each step from
  the fetch of its batch to the end of its update, leaving out the epoch-end checkpoint).
- torch.set_num_threads(--threads; default the configuration's `threads`, else 2);
  DataLoader with --workers worker processes (0: augmentation in the training process, as
  supcon augments inside each step).

Where the peer cannot match (and why): random streams (PyTorch's generator against supcon's
ChaCha8 streams: same distributions, other draws, so kNN differs by seed noise); lightly's
SwaVPrototypes is an nn.Linear with a bias (supcon's prototypes have none; the bias does not
move Sinkhorn's codes, whose row normalisation divides it out, but shifts the prediction
softmax: --no-prototype-bias removes it) and starts from PyTorch's Linear initialisation,
normalised, instead of Gaussian unit rows; lightly's update_momentum averages parameters only
(supcon also averages the key encoder's BatchNorm running statistics, which nothing reads:
keys use batch statistics); SwAV's multi-crop and queue, SupCon's label-aware queue,
symmetric MoCo (lightly's memory bank enqueues at every loss call, so a second direction would
see the first one's keys), LARS and a validation split are not replicated (the script refuses
such configurations).

Prints one JSON line: {"method", "steps", "knn_top1", "img_per_s", "wall_s", ...}.
"""
import argparse
import copy
import json
import math
import os
import sys
import time
import tomllib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_pytorch import (  # noqa: E402  (the replica of resnet-tiny and the IDX reader)
    ARCHITECTURES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    CifarResNet,
    read_idx,
)

import lightly  # noqa: E402
from lightly.loss import NTXentLoss, SwaVLoss  # noqa: E402
from lightly.models.modules import SwaVPrototypes  # noqa: E402
from lightly.models.utils import (  # noqa: E402
    batch_shuffle,
    batch_unshuffle,
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils.benchmarking import knn_predict  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = os.path.join(HERE, "..", "crates", "supcon-train", "src", "presets")

# --method -> (supcon method, MoCo version, preset).
METHODS = {
    "simclr": ("simclr", None, "quick-cpu-simclr"),
    "moco-v1": ("moco", 1, "quick-cpu-moco-v1"),
    "moco-v2": ("moco", 2, "quick-cpu-moco-v2"),
    "swav": ("swav", None, "quick-cpu-swav"),
}

# supcon's defaults for keys a TOML may leave out (config/mod.rs, config/methods.rs).
OPTIM_DEFAULTS = {"warmup_from_fraction": 0.01, "lr_decay_rate": 0.1, "lr_decay_epochs": []}
MOCO_DEFAULTS = {"version": 2, "queue": 4096, "momentum": 0.999, "symmetric": False,
                 "shuffle_groups": 4}
SWAV_DEFAULTS = {"prototypes": 100, "epsilon": 0.05, "sinkhorn_iterations": 3,
                 "freeze_prototypes_epochs": 1, "queue": 0, "queue_start_epoch": 0}
MODEL_DEFAULTS = {"architecture": "resnet18", "in_channels": 3, "stem": "cifar",
                  "zero_init_residual": False, "head": "mlp", "projection_dim": 128,
                  "norm": "batch"}


def default_temperature(method, moco_version):
    """config::methods::spec(..).temperature."""
    return {"simclr": 0.5, "moco": 0.07 if moco_version == 1 else 0.2, "swav": 0.1}[method]


# ---------------------------------------------------------------- configuration


def merge(base, overlay):
    """config/presets.rs `merge`: tables merge key by key, anything else replaces."""
    for key, value in overlay.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            merge(base[key], value)
        else:
            base[key] = value


def preset_table(folder, name, depth=0):
    """config/presets.rs `preset_table`: a preset laid over the one it `extends`."""
    path = os.path.join(folder, f"{name}.toml")
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        sys.exit(f"peer_lightly.py: no preset {name} ({path}); pass --presets DIR")
    base = table.pop("extends", None)
    if base is None:
        return table
    if depth >= 4:
        sys.exit(f"peer_lightly.py: preset {name}: `extends` deeper than 4")
    merged = preset_table(folder, base, depth + 1)
    merge(merged, table)
    return merged


def load_config(args):
    """The resolved table: --config as written by supcon, or --preset from the presets folder
    with supcon's bench overrides (all training images, two views for SwAV)."""
    method, version, preset = METHODS[args.method]
    if args.config:
        with open(args.config, "rb") as f:
            table = tomllib.load(f)
        source = args.config
    else:
        table = preset_table(args.presets, args.preset or preset)
        table.setdefault("data", {})["validation_fraction"] = 0.0
        table.setdefault("pretrain", {}).setdefault("multicrop", {})["local_views"] = 0
        source = f"preset {args.preset or preset}"
    pretrain = table.get("pretrain", {})
    if pretrain.get("method") != method:
        sys.exit(f"peer_lightly.py: {source} trains `{pretrain.get('method')}`, "
                 f"--method {args.method} is `{method}`")
    if version is not None:
        found = pretrain.get("moco", {}).get("version", MOCO_DEFAULTS["version"])
        if found != version:
            sys.exit(f"peer_lightly.py: {source} is MoCo v{found}, --method is {args.method}")
    data = table.setdefault("data", {})
    if args.epochs is not None:
        pretrain["epochs"] = args.epochs
    if args.train_per_class is not None:
        data["train_per_class"] = args.train_per_class
    if args.test_per_class is not None:
        data["test_per_class"] = args.test_per_class
    if args.batch is not None:
        pretrain["batch_size"] = args.batch
    return table, source


def unsupported(what):
    sys.exit(f"peer_lightly.py: {what} is not replicated by the peer")


def settings(table, args):
    """The resolved settings the peer uses, checked against what it replicates."""
    method, _, _ = METHODS[args.method]
    data, pretrain = table.get("data", {}), table["pretrain"]
    model = {**MODEL_DEFAULTS, **table.get("model", {})}
    optim = {**OPTIM_DEFAULTS, **pretrain.get("optim", {})}
    evaluation = table.get("eval", {})
    if data.get("dataset", "fashion-mnist") != "fashion-mnist":
        unsupported(f"data.dataset = {data.get('dataset')}")
    if data.get("validation_fraction", 0.0) != 0.0:
        unsupported("a validation split (run supcon with --set data.validation_fraction=0)")
    if pretrain.get("views", 2) != 2:
        unsupported(f"pretrain.views = {pretrain.get('views')}")
    if pretrain.get("multicrop", {}).get("local_views", 0) != 0:
        unsupported("multi-crop (run supcon with --set pretrain.multicrop.local_views=0)")
    if method == "simclr" and pretrain.get("queue", 0) != 0:
        unsupported("the label-aware queue (pretrain.queue)")
    if pretrain.get("contrast_mode", "all") != "all":
        unsupported("contrast_mode = one")
    if optim.get("optimizer", "sgd") != "sgd":
        unsupported(f"optimizer = {optim.get('optimizer')}")
    arch = model["architecture"].lower().replace("-", "").replace("_", "")
    arch = {"resnettiny": "resnet-tiny", "resnet18": "resnet18"}.get(arch)
    if arch is None:
        unsupported(f"model.architecture = {model['architecture']}")
    if model["stem"] != "cifar" or model["norm"] != "batch" or model["in_channels"] != 1:
        unsupported("a stem, norm or channel count other than cifar / batch / 1")
    if model["head"] not in ("mlp", "linear"):
        unsupported(f"model.head = {model['head']}")
    moco = {**MOCO_DEFAULTS, **pretrain.get("moco", {})}
    swav = {**SWAV_DEFAULTS, **pretrain.get("swav", {})}
    if method == "swav" and swav["queue"] != 0:
        unsupported("SwAV's queue")
    if method == "moco" and moco["symmetric"]:
        # supcon: both directions against the same queue, half each. lightly's memory bank
        # enqueues at every loss call, so a second direction would see the first one's keys.
        unsupported("symmetric MoCo")
    if method == "moco" and moco.get("momentum_final", moco["momentum"]) != moco["momentum"]:
        # The replica moves its key encoder with one constant m (update_momentum, per step).
        unsupported("a rising key momentum (pretrain.moco.momentum_final)")
    tau = pretrain.get("temperature", default_temperature(method, moco["version"]))
    base_tau = pretrain.get("base_temperature", tau)
    if method == "simclr" and base_tau != tau:
        unsupported("base_temperature != temperature")
    warmup = optim.get("warmup_epochs")
    if warmup is None:
        epochs = pretrain["epochs"]
        warmup = min(epochs / 10.0, 10.0) if pretrain["batch_size"] > 256 else 0.0
    return {
        "method": method,
        "data": args.data or data.get("path") or os.environ.get("SUPCON_DATA")
        or "/usr/share/datasets/fashion-mnist",
        "seed": table.get("seed", 0) if args.seed is None else args.seed,
        "threads": args.threads or table.get("threads", 0) or 2,
        "train_per_class": data.get("train_per_class", 0),
        "test_per_class": data.get("test_per_class", 0),
        "arch": arch,
        "zero_init_residual": model["zero_init_residual"],
        "head": model["head"],
        "projection_dim": model["projection_dim"],
        "epochs": pretrain["epochs"],
        "batch": pretrain["batch_size"],
        "augment": pretrain["augment"],
        "temperature": tau,
        "lr": optim["lr"],
        "momentum": optim["momentum"],
        "weight_decay": optim["weight_decay"],
        "schedule": optim["schedule"],
        "warmup_epochs": warmup,
        "warmup_from_fraction": optim["warmup_from_fraction"],
        "lr_decay_rate": optim["lr_decay_rate"],
        "lr_decay_epochs": optim["lr_decay_epochs"],
        "moco": moco,
        "swav": swav,
        "knn_k": evaluation.get("knn_k", 20),
        "knn_temperature": evaluation.get("knn_temperature", 0.1),
        "eval_batch": evaluation.get("batch_size", 1024),
    }


class LrSchedule:
    """supcon's optim.rs LrSchedule: the learning rate of every optimiser step."""

    def __init__(self, s, steps_per_epoch):
        self.base = s["lr"]
        self.kind = s["schedule"]
        self.total = s["epochs"] * steps_per_epoch
        # Rust's f64::round: halves away from zero.
        self.warmup = min(int(math.floor(max(s["warmup_epochs"], 0.0) * steps_per_epoch + 0.5)),
                          self.total)
        self.warmup_from = s["lr"] * s["warmup_from_fraction"]
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.decay_epochs = s["lr_decay_epochs"]
        self.decay_rate = s["lr_decay_rate"]

    def scheduled(self, step):
        if self.kind == "constant":
            return self.base
        if self.kind == "cosine":
            eta_min = self.base * self.decay_rate ** 3
            progress = step / self.total if self.total else 0.0
            return eta_min + (self.base - eta_min) * (1.0 + math.cos(math.pi * progress)) / 2.0
        if self.kind == "step":
            epoch = step // self.steps_per_epoch
            passed = sum(1 for e in self.decay_epochs if e <= epoch)
            return self.base * self.decay_rate ** passed
        unsupported(f"schedule = {self.kind}")

    def lr(self, step):
        if step < self.warmup:
            t = (step + 1) / self.warmup
            return self.warmup_from + t * (self.scheduled(self.warmup) - self.warmup_from)
        return self.scheduled(step)


# ---------------------------------------------------------------- data and augmentation


def first_per_class(labels, n):
    """supcon-data's Dataset::first_per_class: the first n of each class, in file order."""
    if n <= 0:
        return np.arange(len(labels))
    taken, keep = {}, []
    for i, label in enumerate(labels):
        if taken.get(label, 0) < n:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    return np.asarray(keep)


def pixel_stats(images):
    """TrainData's mean and population std of pixel / 255, from a 256-bin histogram."""
    counts = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum()
    mean = float((values * counts).sum() / n)
    std = float(math.sqrt((((values - mean) ** 2) * counts).sum() / n))
    return mean, max(std, 1e-3)


def blur_kernel_size(size):
    """supcon-augment's presets::blur_kernel_size: 10 % of the side, odd, at least 3."""
    k = max(size // 10, 3)
    return k + 1 if k % 2 == 0 else k


def augmentation(recipe, size, measured, backend):
    """supcon-augment's presets::by_name for one gray channel, in torchvision; returns the
    transform and the normalisation it ends with."""
    gray_presets = ("supcon", "simclr", "fashion-mnist")
    if recipe in gray_presets:
        recipe, norm = "resized-crop:0.35+flip+jitter:0.4", (FASHION_MNIST_MEAN[0],
                                                             FASHION_MNIST_STD[0])
    elif recipe == "none":
        recipe, norm = "", measured
    else:
        norm = measured
    ops = []
    for position, step in enumerate(s.strip() for s in recipe.split("+") if s.strip()):
        name, _, text = step.partition(":")
        name, text = name.strip(), text.strip()
        if name in ("resized-crop", "pad-crop") and position > 0:
            sys.exit(f"peer_lightly.py: `{name}` must be the recipe's first step")
        if name == "resized-crop":
            if ".." in text:
                low, high = text.split("..")
                scale = (float(low), float(high))
            else:
                scale = (float(text) if text else 0.35, 1.0)
            ops.append(transforms.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3),
                                                    antialias=True))
        elif name == "pad-crop":
            ops.append(transforms.RandomCrop(size, padding=int(float(text)) if text else 2))
        elif name == "flip":
            ops.append(transforms.RandomHorizontalFlip(p=float(text) if text else 0.5))
        elif name == "jitter":
            x = float(text) if text else 0.4
            ops.append(transforms.RandomApply([transforms.ColorJitter(brightness=x, contrast=x)],
                                              p=0.8))
        elif name == "blur":
            p = float(text) if text else 0.5
            ops.append(transforms.RandomApply(
                [transforms.GaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=p))
        else:
            unsupported(f"augmentation step `{step}`")
    if backend == "pil":
        ops.append(transforms.ToTensor())
    ops.append(transforms.Normalize(mean=(norm[0],), std=(norm[1],)))
    return transforms.Compose(ops), norm


class TwoViews(Dataset):
    """Two independent augmented views of each training image."""

    def __init__(self, images, transform, backend):
        self.images = images
        self.transform = transform
        self.backend = backend

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if self.backend == "pil":
            img = Image.fromarray(self.images[index])
        else:
            img = torch.from_numpy(self.images[index]).unsqueeze(0).float().div_(255.0)
        return self.transform(img), self.transform(img)


# ---------------------------------------------------------------- model


class Projector(nn.Module):
    """supcon-models' SupConModel: encoder, head, L2-normalised projections."""

    def __init__(self, s):
        super().__init__()
        self.encoder = CifarResNet(in_channels=1, **ARCHITECTURES[s["arch"]])
        d = self.encoder.feature_dim
        if s["head"] == "mlp":
            self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True),
                                      nn.Linear(d, s["projection_dim"]))
        else:
            self.head = nn.Linear(d, s["projection_dim"])
        # SupContrast's ResNet initialisation, which supcon-models' layers.rs follows.
        for m in self.encoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if s["zero_init_residual"]:
            for m in self.encoder.modules():
                if hasattr(m, "bn2") and hasattr(m, "shortcut"):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        return F.normalize(self.head(self.encoder(x)), dim=1)


# ---------------------------------------------------------------- methods


class SimCLR:
    def __init__(self, model, s, steps_per_epoch):
        self.model = model
        self.criterion = NTXentLoss(temperature=s["temperature"])

    def parameters(self):
        return list(self.model.parameters())

    def train(self):
        self.model.train()

    def loss(self, v0, v1, step):
        z0, z1 = self.model(torch.cat([v0, v1])).chunk(2)
        return self.criterion(z0, z1)

    def after_step(self):
        pass


class MoCo:
    def __init__(self, model, s, steps_per_epoch):
        m = s["moco"]
        self.model = model
        self.key_model = copy.deepcopy(model)
        deactivate_requires_grad(self.key_model)
        self.momentum = m["momentum"]
        self.groups = m["shuffle_groups"]
        self.criterion = NTXentLoss(temperature=s["temperature"],
                                    memory_bank_size=(m["queue"], s["projection_dim"]))

    def parameters(self):
        return list(self.model.parameters())

    def train(self):
        self.model.train()
        self.key_model.train()  # batch statistics for the keys, as MoCo

    @torch.no_grad()
    def keys(self, images):
        """MomentumEncoder::keys_shuffled: the shuffled batch in `groups` chunks."""
        n = images.shape[0]
        groups = min(max(self.groups, 1), max(n, 1))
        shuffled, order = batch_shuffle(images)
        chunk = -(-n // groups)
        keys = torch.cat([self.key_model(part) for part in shuffled.split(chunk)])
        return batch_unshuffle(keys, order)

    def loss(self, v0, v1, step):
        return self.criterion(self.model(v0), self.keys(v1))

    def after_step(self):
        update_momentum(self.model, self.key_model, m=self.momentum)


class SwAV:
    def __init__(self, model, s, steps_per_epoch, bias=True):
        w = s["swav"]
        self.model = model
        self.prototypes = SwaVPrototypes(
            s["projection_dim"], w["prototypes"],
            n_steps_frozen_prototypes=w["freeze_prototypes_epochs"] * steps_per_epoch)
        if not bias:
            for layer in self.prototypes.heads:
                layer.bias = None
        self.criterion = SwaVLoss(temperature=s["temperature"],
                                  sinkhorn_iterations=w["sinkhorn_iterations"],
                                  sinkhorn_epsilon=w["epsilon"])

    def parameters(self):
        return list(self.model.parameters()) + list(self.prototypes.parameters())

    def train(self):
        self.model.train()
        self.prototypes.train()

    def loss(self, v0, v1, step):
        self.prototypes.normalize()
        scores = self.prototypes(self.model(torch.cat([v0, v1])), step)
        p0, p1 = scores.chunk(2)
        return self.criterion([p0, p1], [])

    def after_step(self):
        pass


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def features(encoder, images, mean, std, batch):
    """Backbone features of the images (no augmentation, BatchNorm in eval mode)."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).unsqueeze(1).float().div_(255.0)
        out.append(encoder((x - mean) / std))
    return torch.cat(out)


@torch.no_grad()
def knn(bank, bank_labels, queries, query_labels, k, t, num_classes, block=256):
    """eval/knn.rs's weighted kNN through lightly's knn_predict: top-1 and top-5 fractions."""
    bank = F.normalize(bank, dim=1).t().contiguous()
    queries = F.normalize(queries, dim=1)
    bank_labels = torch.as_tensor(bank_labels, dtype=torch.long)
    query_labels = torch.as_tensor(query_labels, dtype=torch.long)
    k = min(k, bank.shape[1])
    top1 = top5 = 0
    for start in range(0, len(queries), block):
        ranked = knn_predict(queries[start:start + block], bank, bank_labels, num_classes,
                             knn_k=k, knn_t=t)
        truth = query_labels[start:start + block].unsqueeze(1)
        top1 += (ranked[:, :1] == truth).any(dim=1).sum().item()
        top5 += (ranked[:, :5] == truth).any(dim=1).sum().item()
    return top1 / len(queries), top5 / len(queries)


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    parser.add_argument("--config", help="a resolved supcon config.toml (a run folder's)")
    parser.add_argument("--preset", help="a supcon preset (default: quick-cpu-<method>)")
    parser.add_argument("--presets", default=PRESETS, help="folder of supcon's preset TOMLs")
    parser.add_argument("--epochs", type=int, help="override pretrain.epochs")
    parser.add_argument("--train-per-class", type=int, help="override data.train_per_class")
    parser.add_argument("--test-per-class", type=int, help="override data.test_per_class")
    parser.add_argument("--batch", type=int, help="override pretrain.batch_size (smoke tests)")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="stop after this many steps, schedule unchanged (smoke tests)")
    parser.add_argument("--threads", type=int, help="torch threads (default: config, else 2)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, help="override the configuration's seed")
    parser.add_argument("--data", help="Fashion-MNIST folder (default: data.path, "
                        "$SUPCON_DATA, /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--augment-backend", choices=("tensor", "pil"), default="tensor")
    parser.add_argument("--no-prototype-bias", action="store_true",
                        help="SwAV: drop the bias of lightly's prototype layer (supcon has none)")
    args = parser.parse_args()
    if args.config and args.preset:
        parser.error("--config and --preset exclude each other")

    table, source = load_config(args)
    s = settings(table, args)
    torch.manual_seed(s["seed"])
    torch.set_num_threads(s["threads"])

    train_images = read_idx(os.path.join(s["data"], "train-images-idx3-ubyte.gz"))
    train_labels = read_idx(os.path.join(s["data"], "train-labels-idx1-ubyte.gz")).astype(np.int64)
    test_images = read_idx(os.path.join(s["data"], "t10k-images-idx3-ubyte.gz"))
    test_labels = read_idx(os.path.join(s["data"], "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    keep = first_per_class(train_labels, s["train_per_class"])
    train_images, train_labels = np.ascontiguousarray(train_images[keep]), train_labels[keep]
    keep = first_per_class(test_labels, s["test_per_class"])
    test_images, test_labels = np.ascontiguousarray(test_images[keep]), test_labels[keep]
    measured = pixel_stats(train_images)
    size = train_images.shape[1]
    transform, train_norm = augmentation(s["augment"], size, measured, args.augment_backend)

    steps_per_epoch = len(train_images) // s["batch"]  # drop_last
    if steps_per_epoch == 0:
        sys.exit(f"peer_lightly.py: {len(train_images)} training images are fewer than one "
                 f"batch of {s['batch']}")
    total = s["epochs"] * steps_per_epoch
    run_steps = min(total, args.max_steps) if args.max_steps > 0 else total
    loader = DataLoader(TwoViews(train_images, transform, args.augment_backend),
                        batch_size=s["batch"], shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    model = Projector(s)
    if s["method"] == "simclr":
        method = SimCLR(model, s, steps_per_epoch)
    elif s["method"] == "moco":
        method = MoCo(model, s, steps_per_epoch)
    else:
        method = SwAV(model, s, steps_per_epoch, bias=not args.no_prototype_bias)
    optimizer = torch.optim.SGD(method.parameters(), lr=s["lr"], momentum=s["momentum"],
                                weight_decay=s["weight_decay"])
    schedule = LrSchedule(s, steps_per_epoch)

    method.train()
    step, images, losses = 0, 0, []
    start = time.perf_counter()
    for epoch in range(s["epochs"]):
        if step == run_steps:
            break
        epoch_start, epoch_losses = time.perf_counter(), []
        for v0, v1 in loader:
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = method.loss(v0, v1, step)
            if not torch.isfinite(loss).all():
                sys.exit(f"peer_lightly.py: non-finite loss {loss.item()} at step {step}, "
                         f"lr {lr}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            method.after_step()
            epoch_losses.append(loss.item())
            images += v0.shape[0]
            step += 1
            if step == run_steps:
                break
        losses.extend(epoch_losses)
        seconds = time.perf_counter() - epoch_start
        print(f"peer {args.method}: epoch {epoch + 1}/{s['epochs']}, {len(epoch_losses)} steps, "
              f"loss {np.mean(epoch_losses):.4f}, "
              f"{len(epoch_losses) * s['batch'] / seconds:.0f} images/s", file=sys.stderr)
    wall = time.perf_counter() - start

    eval_start = time.perf_counter()
    encoder = model.encoder.eval()
    mean, std = measured
    bank = features(encoder, train_images, mean, std, s["eval_batch"])
    queries = features(encoder, test_images, mean, std, s["eval_batch"])
    top1, top5 = knn(bank, train_labels, queries, test_labels, s["knn_k"],
                     s["knn_temperature"], int(max(train_labels.max(), test_labels.max())) + 1)
    eval_seconds = time.perf_counter() - eval_start

    import torchvision
    result = {
        "method": args.method,
        "config": source,
        "epochs": s["epochs"],
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "batch": s["batch"],
        "train_images": len(train_images),
        "test_images": len(test_images),
        "knn_top1": round(top1, 6),
        "knn_top5": round(top5, 6),
        "knn_k": s["knn_k"],
        "knn_temperature": s["knn_temperature"],
        "img_per_s": round(images / wall, 1),
        "wall_s": round(wall, 2),
        "eval_s": round(eval_seconds, 2),
        "first_loss": round(losses[0], 4) if losses else None,
        "last_loss": round(losses[-1], 4) if losses else None,
        "lr": s["lr"],
        "temperature": s["temperature"],
        "head": s["head"],
        "augment": s["augment"],
        "augment_backend": args.augment_backend,
        "train_normalize": [round(train_norm[0], 6), round(train_norm[1], 6)],
        "eval_normalize": [round(mean, 6), round(std, 6)],
        "prototype_bias": s["method"] == "swav" and not args.no_prototype_bias,
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "seed": s["seed"],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightly": lightly.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
