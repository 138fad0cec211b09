"""One case of `cargo xtask bench python`: forward + backward of a SupCon loss at N rows.

    python python_losses.py --impl supcon|pml|supcontrast --rows N [--dim 128] [--repeats R]
                            [--limit-gib 16] [--threads 2]

The N rows are N/2 images of two views each (D dims, 100 classes), as SupContrast feeds its
loss; every implementation gets the same rows: `supcon.torch.SupConLoss` and SupContrast's
`SupConLoss` (its formulation, τ_base = τ) on `[N/2, 2, D]`,
pytorch-metric-learning's `SupConLoss` on the `[N, D]` rows with the image labels repeated.

Memory: the process may allocate `--limit-gib` GiB beyond what it holds after the set-up
(RLIMIT_AS), so an implementation that needs more fails with an allocation error instead of
taking the machine down. Prints one JSON line: the wall time of each repeat, their median, and
the peak resident memory beyond the set-up's (`ru_maxrss`).
"""

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# SupContrast's formulation, as the GPU benchmark runs it (same folder).
from supcon_dense_pytorch import supcon_dense

TEMPERATURE = 0.1


def make_loss(name):
    if name == "supcon":
        from supcon.torch import SupConLoss

        criterion = SupConLoss(temperature=TEMPERATURE)
        return lambda views, labels: criterion(views, labels)
    if name == "pml":
        from pytorch_metric_learning.losses import SupConLoss

        criterion = SupConLoss(temperature=TEMPERATURE)
        return lambda views, labels: criterion(
            torch.cat(torch.unbind(views, dim=1)), labels.repeat(views.shape[1])
        )
    if name == "supcontrast":
        return lambda views, labels: supcon_dense(
            F.normalize(views, dim=-1), labels, TEMPERATURE, TEMPERATURE
        )
    raise SystemExit(f"unknown --impl {name}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit-gib", type=float, default=16.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = args.rows // 2
    views = torch.randn(images, 2, args.dim, generator=generator)
    labels = torch.randint(0, 100, (images,), generator=generator)
    loss_fn = make_loss(args.impl)

    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    held = int(fields["VmSize"].split()[0]) * 1024
    limit = held + int(args.limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    times = []
    try:
        for _ in range(args.repeats):
            x = views.clone().requires_grad_()
            start = time.perf_counter()
            loss = loss_fn(x, labels)
            loss.backward()
            times.append(time.perf_counter() - start)
            del x, loss
    except (RuntimeError, MemoryError) as e:
        print(json.dumps({"impl": args.impl, "rows": args.rows, "ok": False,
                          "error": str(e).splitlines()[0][:200]}))
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "impl": args.impl,
        "rows": args.rows,
        "ok": True,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_extra_mib": max(peak - baseline, 0) / 1024.0,
    }))


if __name__ == "__main__":
    sys.exit(main())
