#!/usr/bin/env python3
"""Reference side of `cargo xtask bench data`: torchvision's ImageFolder + DataLoader reading,
decoding and augmenting a folder of JPEGs with SupContrast's two-view recipe, the way
SupContrast's ImageNet path runs it.

ImageFolder(root, transform=TwoCropTransform(Compose([RandomResizedCrop(side, scale=(0.2, 1.)),
RandomHorizontalFlip(), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
RandomGrayscale(p=0.2), ToTensor(), Normalize(ImageNet mean, std)]))), PIL decoding (the
default loader), a DataLoader with `--workers` persistent worker processes over a seeded
sample of `--batches` batches, torch.set_num_threads(workers). A first, untimed epoch starts
the workers and warms the page cache; the second is timed from the creation of its iterator
(the workers then start preparing batches) to its last batch.

Prints one JSON line: {"img_per_s": ..., "img_per_cpu_s": ..., ...}; img_per_s counts source
images per wall-clock second of the timed epoch, each giving two views; img_per_cpu_s divides
the images of both epochs by the CPU time of the main process and its workers.
"""
import argparse
import json
import resource
import time

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TwoCropTransform:
    """SupContrast's util.TwoCropTransform."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, x):
        return [self.transform(x), self.transform(x)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--side", type=int, default=224)
    args = parser.parse_args()

    torch.set_num_threads(args.workers)
    recipe = transforms.Compose([
        transforms.RandomResizedCrop(size=args.side, scale=(0.2, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])
    folder = datasets.ImageFolder(args.root, transform=TwoCropTransform(recipe))
    needed = args.batches * args.batch
    if len(folder) < needed:
        raise SystemExit(f"{len(folder)} images, the benchmark needs {needed}")
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(1))[:needed]
    loader = DataLoader(Subset(folder, order.tolist()), batch_size=args.batch,
                        num_workers=args.workers, drop_last=True,
                        persistent_workers=args.workers > 0)

    def cpu():
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    cpu0 = cpu()
    for _ in loader:  # warm-up epoch
        pass
    start = time.perf_counter()
    images = 0
    for views, _ in loader:
        images += views[0].shape[0]
    seconds = time.perf_counter() - start
    # Ending the workers puts their CPU time in RUSAGE_CHILDREN.
    loader._iterator._shutdown_workers() if loader._iterator is not None else None
    del loader
    cpu_seconds = cpu() - cpu0
    print(json.dumps({
        "img_per_s": round(images / seconds, 1),
        "img_per_cpu_s": round(2 * needed / cpu_seconds, 1) if cpu_seconds > 0 else None,
        "workers": args.workers,
        "batch": args.batch,
        "images": images,
        "side": args.side,
        "seconds": round(seconds, 3),
        "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__,
    }))


if __name__ == "__main__":
    main()
