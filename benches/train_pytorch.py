#!/usr/bin/env python3
"""Reference side of `cargo xtask bench train`: one SupCon pre-training step in PyTorch, the
way SupContrast's main_supcon.py runs it, on the model of supcon's quick-cpu preset.

- Data: Fashion-MNIST's training images (the IDX .gz files of Debian's dataset-fashion-mnist,
  or --data DIR), held in memory as uint8 like torchvision's FashionMNIST dataset.
- Augmentation, included in the timed loop (as on supcon's side, where each step's time
  covers the batch writer): per image a PIL image, then TwoCropTransform(Compose([
  RandomResizedCrop(28, scale=(0.35, 1.)), RandomHorizontalFlip(),
  RandomApply([ColorJitter(brightness=0.4, contrast=0.4)], p=0.8), ToTensor(),
  Normalize(0.2860, 0.3530)])) = supcon-augment's presets::fashion_mnist; a DataLoader with
  --workers worker processes (0: in the training process) and the default collate.
- Model: the CIFAR-style ResNet of supcon-models' resnet_tiny (3x3 stem, widths 16/32/64,
  one BasicBlock per stage, bias-free convolutions, BatchNorm, global average pooling),
  1 input channel, MLP head 64 -> 64 -> 128, L2-normalised projections (SupConResNet).
- Loss: SupContrast's SupConLoss (contrast_mode 'all', temperature = base_temperature = 0.1).
- Optimiser: SGD, lr 0.1, momentum 0.9, weight decay 1e-4, per-step cosine schedule.
- torch.set_num_threads(--threads, default 2).

Prints one JSON line: {"img_per_s": ...}; img_per_s counts source images per second (each
gives two views), the unit of supcon's images_per_second.
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


class TwoCropTransform:
    """SupContrast's util.TwoCropTransform."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, x):
        return [self.transform(x), self.transform(x)]


def fashion_mnist_transform():
    return transforms.Compose([
        transforms.RandomResizedCrop(size=28, scale=(0.35, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
        transforms.ToTensor(),
        transforms.Normalize(mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD),
    ])


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class FashionMNIST(Dataset):
    def __init__(self, folder, transform):
        self.data = read_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"))
        self.targets = read_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz")).astype(np.int64)
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        img = Image.fromarray(self.data[index], mode="L")
        return self.transform(img), int(self.targets[index])


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """SupContrast's CIFAR ResNet (3x3 stem, no max-pool, BasicBlocks). The default is
    supcon-models' resnet_tiny (widths 16/32/64, 1 block each); ARCHITECTURES["resnet18"] is
    SupContrast's resnet18 (widths 64/128/256/512, 2 blocks each)."""

    def __init__(self, in_channels=1, widths=(16, 32, 64), blocks=(1, 1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, in_planes = [], widths[0]
        for i, (planes, count) in enumerate(zip(widths, blocks)):
            for k in range(count):
                layers.append(BasicBlock(in_planes, planes, 2 if i > 0 and k == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.feature_dim = in_planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


ARCHITECTURES = {
    "resnet-tiny": dict(widths=(16, 32, 64), blocks=(1, 1, 1)),
    "resnet18": dict(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)),
}


class SupConResNet(nn.Module):
    def __init__(self, architecture="resnet-tiny", feat_dim=128):
        super().__init__()
        self.encoder = CifarResNet(**ARCHITECTURES[architecture])
        d = self.encoder.feature_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, feat_dim))

    def forward(self, x):
        return F.normalize(self.head(self.encoder(x)), dim=1)


class SupConLoss(nn.Module):
    """SupContrast's losses.SupConLoss (contrast_mode='all')."""

    def __init__(self, temperature=0.1, base_temperature=0.1):
        super().__init__()
        self.temperature = temperature
        self.base_temperature = base_temperature

    def forward(self, features, labels):
        device = features.device
        batch_size = features.shape[0]
        labels = labels.contiguous().view(-1, 1)
        mask = torch.eq(labels, labels.T).float().to(device)
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        anchor_feature = contrast_feature
        anchor_count = contrast_count
        anchor_dot_contrast = torch.div(
            torch.matmul(anchor_feature, contrast_feature.T), self.temperature)
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(
            torch.ones_like(mask), 1,
            torch.arange(batch_size * anchor_count).view(-1, 1).to(device), 0)
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        mask_pos_pairs = mask.sum(1)
        mask_pos_pairs = torch.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
        loss = - (self.temperature / self.base_temperature) * mean_log_prob_pos
        return loss.view(anchor_count, batch_size).mean()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("SUPCON_DATA", "/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="resnet-tiny")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU side of the train bench)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    dataset = FashionMNIST(args.data, TwoCropTransform(fashion_mnist_transform()))
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0, drop_last=True)
    device = torch.device(args.device)
    model = SupConResNet(args.arch).to(device)
    criterion = SupConLoss(temperature=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    total = args.warmup_steps + args.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total)))
    model.train()

    done, images, start, losses = 0, 0, None, []
    while done < total:
        for views, labels in loader:
            if done == args.warmup_steps:
                start = time.perf_counter()
                images = 0
            x = torch.cat([views[0], views[1]], dim=0).to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            bsz = labels.shape[0]
            features = model(x)
            f1, f2 = torch.split(features, [bsz, bsz], dim=0)
            loss = criterion(torch.stack([f1, f2], dim=1), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            images += bsz
            done += 1
            if done == total:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rate = images / seconds
    result = {
        "img_per_s": round(rate, 1),
        "images": images,
        "seconds": round(seconds, 4),
        "steps": args.steps,
        "batch": args.batch,
        "views": 2,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "torch": torch.__version__,
        "arch": args.arch,
        "device": args.device,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"PyTorch SupCon step: {images} images x 2 views in {seconds:.3f} s "
              f"({args.workers} workers, {torch.get_num_threads()} threads): {rate:.0f} images/s")


if __name__ == "__main__":
    main()
