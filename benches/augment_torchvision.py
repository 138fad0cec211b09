#!/usr/bin/env python3
"""Reference side of `cargo xtask bench augment`: SupContrast's two-view training transform
through torchvision, the way SupContrast runs it.

Per image: a PIL image made from uint8 pixels (as torchvision's CIFAR10 dataset does in
__getitem__), then TwoCropTransform(Compose([RandomResizedCrop(32, scale=(0.2, 1.)),
RandomHorizontalFlip(), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
RandomGrayscale(p=0.2), ToTensor(), Normalize(mean, std)])), batched by a DataLoader with
`--workers` worker processes (default 2) and the default collate. torch.set_num_threads(2).
The timed epoch starts its workers (fork) and joins them at its end.

Prints one JSON line: {"img_per_s": ..., "img_per_cpu_s": ..., "workers": ..., ...};
img_per_s counts source images per wall-clock second, each giving two views (the same unit as
supcon-augment's example); img_per_cpu_s divides by the CPU time of the main process and its
workers instead, which a busy machine distorts less.
"""
import argparse
import json
import resource
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


class TwoCropTransform:
    """SupContrast's util.TwoCropTransform."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, x):
        return [self.transform(x), self.transform(x)]


def recipe(name):
    if name == "cifar":
        return transforms.Compose([
            transforms.RandomResizedCrop(size=32, scale=(0.2, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
            transforms.ToTensor(),
            transforms.Normalize(mean=CIFAR10_MEAN, std=CIFAR10_STD),
        ])
    if name == "fmnist":
        # supcon-augment's presets::fashion_mnist
        return transforms.Compose([
            transforms.RandomResizedCrop(size=28, scale=(0.35, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomApply([transforms.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
            transforms.ToTensor(),
            transforms.Normalize(mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD),
        ])
    raise SystemExit(f"unknown recipe {name!r} (cifar | fmnist)")


class Synthetic(Dataset):
    """uint8 images held in memory like torchvision's CIFAR10 / FashionMNIST datasets."""

    def __init__(self, n, h, w, c, transform, seed=0):
        rng = np.random.default_rng(seed)
        shape = (n, h, w, c) if c > 1 else (n, h, w)
        self.data = rng.integers(0, 256, size=shape, dtype=np.uint8)
        self.mode = "RGB" if c == 3 else "L"
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        img = Image.fromarray(self.data[index], mode=self.mode)
        return self.transform(img), 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="cifar")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(2)
    h, w, c = (32, 32, 3) if args.recipe == "cifar" else (28, 28, 1)
    dataset = Synthetic(args.batch * args.batches, h, w, c, TwoCropTransform(recipe(args.recipe)))
    def loader():
        # Workers are started per epoch and joined at its end, so that their CPU time shows
        # up in RUSAGE_CHILDREN.
        return DataLoader(dataset, batch_size=args.batch, shuffle=True,
                          num_workers=args.workers, drop_last=True)

    # Warm-up: a few batches (page cache, allocator, lazy imports in the workers).
    for k, _ in enumerate(loader()):
        if k + 1 >= min(3, len(dataset) // args.batch):
            break

    def cpu():
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    cpu0 = cpu()
    start = time.perf_counter()
    images = 0
    for views, _ in loader():
        images += views[0].shape[0]
    seconds = time.perf_counter() - start
    cpu_seconds = cpu() - cpu0
    rate = images / seconds
    result = {
        "recipe": args.recipe,
        "img_per_s": round(rate, 1),
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "views": 2,
        "images": images,
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu_seconds, 4),
        "img_per_cpu_s": round(images / cpu_seconds, 1) if cpu_seconds > 0 else None,
        "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.recipe}: {images} images x 2 views in {seconds:.3f} s with "
              f"{args.workers} workers: {rate:.0f} images/s")


if __name__ == "__main__":
    main()
