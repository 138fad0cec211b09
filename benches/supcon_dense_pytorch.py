#!/usr/bin/env python3
"""PyTorch's dense SupContrast loss (forward + backward) on a CUDA GPU: the reference side of
the GPU loss benchmark (docs/src/benchmarks/gpu.md).

The formulation is SupContrast's `SupConLoss` (HobbitLong/SupContrast, losses.py), contrast
mode 'all': it materializes the N x N similarity matrix and several N x N masks, so memory grows
as N^2 and it runs out of memory near N = 40 000 on an 80 GB GPU.

    python3 benches/supcon_dense_pytorch.py [--sizes 2048,8192,32768] [--dim 128]
        [--warmup 3] [--iters 10] [--classes 100] [--no-search] [--dtype float32]

N is the number of feature rows V*B with V = 2 views (B = N/2 samples), tau = tau_base = 0.1,
random labels from --classes classes, L2-normalized rows; the same problem as
`cargo run --release -p supcon-loss --features cuda --example bench_cuda`.

Prints one JSON object per line: time per fwd+bwd (median of --iters, CUDA events after
--warmup untimed runs) and peak GPU memory (torch.cuda.max_memory_allocated). After the fixed
sizes it searches for the largest N that runs (x1.25 steps from the last size, then a bisection
between the last success and the first out-of-memory), unless --no-search.
"""

import argparse
import json
import sys

import torch


def supcon_dense(features, labels, temperature=0.1, base_temperature=0.1):
    """SupContrast's SupConLoss, contrast_mode='all', features [B, V, D], labels [B]."""
    device = features.device
    batch, views = features.shape[0], features.shape[1]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).float().to(device)
    contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_feature = contrast_feature
    anchor_count = views
    anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(anchor_count, views)
    logits_mask = torch.scatter(
        torch.ones_like(mask),
        1,
        torch.arange(batch * anchor_count, device=device).view(-1, 1),
        0,
    )
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mask_pos_pairs = mask.sum(1)
    mask_pos_pairs = torch.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss.view(anchor_count, batch).mean()


def make_inputs(n, dim, classes, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    batch = n // 2
    features = torch.rand(batch, 2, dim, device="cuda", generator=gen, dtype=torch.float32) * 2 - 1
    features = torch.nn.functional.normalize(features, dim=2).to(dtype)
    labels = torch.randint(0, classes, (batch,), device="cuda", generator=gen)
    return features, labels


def run(n, args):
    """Times one size; returns a result dict, or one with "error" on out-of-memory."""
    dtype = getattr(torch, args.dtype)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        features, labels = make_inputs(n, args.dim, args.classes, dtype, seed=n)
        base = torch.cuda.max_memory_allocated()

        def step():
            f = features.detach().requires_grad_(True)
            loss = supcon_dense(f, labels)
            loss.backward()
            return loss, f.grad

        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        loss = None
        for _ in range(args.iters):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            loss, _ = step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        peak = torch.cuda.max_memory_allocated()
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        return {"impl": "pytorch-dense", "n": n, "dim": args.dim, "error": "out of memory",
                "detail": str(err).splitlines()[0]}
    times.sort()
    median = times[len(times) // 2]
    flop = 8.0 * n * n * args.dim
    return {
        "impl": "pytorch-dense",
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "n": n,
        "batch": n // 2,
        "views": 2,
        "dim": args.dim,
        "classes": args.classes,
        "warmup": args.warmup,
        "iters": args.iters,
        "median_ms": median,
        "min_ms": times[0],
        "times_ms": times,
        "loss": float(loss),
        "peak_mem_bytes": peak,
        "input_bytes": base,
        "flop_8n2d": flop,
        "tflops_8n2d": flop / (median * 1e-3) / 1e12,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,8192,32768")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--no-search", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"impl": "pytorch-dense", "error": "no CUDA device"}))
        return 2
    # PyTorch's default: full-precision f32 matmuls (no TF32), like our Precision::F32.
    torch.backends.cuda.matmul.allow_tf32 = False
    sizes = [int(s) for s in args.sizes.split(",") if s]
    last_ok = None
    first_fail = None
    for n in sizes:
        result = run(n, args)
        print(json.dumps(result), flush=True)
        if "error" in result:
            first_fail = n if first_fail is None else min(first_fail, n)
        else:
            last_ok = n if last_ok is None else max(last_ok, n)
    if not args.no_search and last_ok is not None:
        n = last_ok
        while first_fail is None:
            n = int(n * 1.25) // 2 * 2
            result = run(n, argparse.Namespace(**{**vars(args), "warmup": 1, "iters": 1}))
            if "error" in result:
                first_fail = n
            else:
                last_ok = n
        while first_fail - last_ok > 512:
            mid = (last_ok + first_fail) // 4 * 2
            result = run(mid, argparse.Namespace(**{**vars(args), "warmup": 1, "iters": 1}))
            if "error" in result:
                first_fail = mid
            else:
                last_ok = mid
        final = run(last_ok, argparse.Namespace(**{**vars(args), "warmup": 1, "iters": 3}))
        if "error" in final:
            # Seen on an H200: N ran once in the search, then the confirmation ran out of
            # memory (the allocator's cache after many sizes). N is still the largest that ran.
            final = {**final, "n": last_ok, "confirmation_failed": True}
        final["largest_n"] = True
        final["first_oom_n"] = first_fail
        print(json.dumps(final), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
