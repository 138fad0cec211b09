#!/usr/bin/env bash
# One GPU session in one command: the GPU tests, the loss benchmark pair and a short training run
# against PyTorch, for a GPU host that has PyTorch 2.11 (cu130) but no Rust toolchain and no
# network. docs/src/benchmarks/gpu.md has the figures this produced and how to read them.
#
#   bash benches/gpu_session.sh pack   # CPU host: build, strip, bundle into .gpu/bundle.tar.xz
#   bash benches/gpu_session.sh run [STEP...]  # GPU host, repository root, .gpu/bundle.tar.xz
#
# Steps (default: ceilings tests loss train): ceilings (copy and SGEMM rates), tests (the GPU
# tests and the bad-input table), loss (ours f32/TF32 vs PyTorch's dense loss), loss-1m (TF32 at
# N = 1 000 000), profile (ncu's time per kernel at N = 8 192), train (3 epochs of gpu-fashion
# and PyTorch's SupContrast step on the same GPU), train-cuda-loss (the same through our CUDA
# loss), train-long (gpu-fashion, 30 epochs, every evaluation), ce-long (its CE baseline, 30
# epochs).
#
# `run` writes every step's output to $OUT/session.log (default OUT: /tmp/gpu-session), copies
# the training run's report beside it, and prints a summary last. Each step has its own time
# limit, so one hang costs that step only.
set -uo pipefail

pack() {
    set -e
    local libtorch
    libtorch=$(readlink -f .libtorch)/lib
    export LD_LIBRARY_PATH=$libtorch
    cargo test --release -p supcon-loss --features cuda,tch --no-run
    cargo build --release -p supcon-loss --features cuda --example bench_cuda
    cargo build --release -p supcon-train --features cuda
    rm -rf .gpu/stage && mkdir -p .gpu/stage/bin .gpu/stage/lib .gpu/stage/fashion-mnist
    for test in cuda_gpu validation_table; do
        # The newest build of each test binary (cargo keeps older hashes beside it).
        strip -o ".gpu/stage/bin/$test" "$(ls -t target/release/deps/"$test"-* | grep -v '\.d$' | head -1)"
    done
    strip -o .gpu/stage/bin/bench_cuda target/release/examples/bench_cuda
    strip -o .gpu/stage/bin/supcon target/release/supcon
    # supcon links OpenBLAS (ndarray-linalg); GPU images rarely carry the system one.
    for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
        cp -L "/lib/x86_64-linux-gnu/$lib" .gpu/stage/lib/
    done
    cp /usr/share/datasets/fashion-mnist/*.gz .gpu/stage/fashion-mnist/
    tar -C .gpu/stage -cJf .gpu/bundle.tar.xz .
    rm -rf .gpu/stage
    ls -la .gpu/bundle.tar.xz
}

run() {
    local steps=("$@")
    [ ${#steps[@]} -eq 0 ] && steps=(ceilings tests loss train)
    OUT=${OUT:-/tmp/gpu-session}
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1
    local dir=/tmp/gpu-bundle logs=/tmp/gpu-logs
    rm -rf "$logs" && mkdir -p "$logs"
    rm -rf "$dir" && mkdir -p "$dir" && tar -C "$dir" -xJf .gpu/bundle.tar.xz || exit 1
    local torch site nvrtc
    torch=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
    site=$(dirname "$torch")
    nvrtc=$(dirname "$(find "$site/nvidia" -name 'libnvrtc.so.13*' | head -1)")
    export LD_LIBRARY_PATH=$torch/lib:$nvrtc:$dir/lib:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
    # tch links libtorch_cpu alone; libtorch_cuda registers the CUDA device type when loaded.
    local preload=$torch/lib/libtorch_cuda.so
    local data=$dir/fashion-mnist
    {
        date -u
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
        python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
        echo "nvrtc: $nvrtc"
        nproc
    } 2>&1 | tee "$OUT/session.log"

    step() { # name limit command...
        local name=$1 limit=$2
        shift 2
        local start=$SECONDS
        timeout "$limit" "$@" >"$logs/$name.log" 2>&1
        local rc=$?
        echo "$name: rc $rc in $((SECONDS - start)) s" | tee -a "$logs/summary.txt"
        tail -n 4 "$logs/$name.log"
        { echo "=== $name (rc $rc, $((SECONDS - start)) s)"; cat "$logs/$name.log"; } >>"$OUT/session.log"
    }

    # Two ceilings, measured here rather than taken from the datasheet (METHOD.md).
    ceilings() {
        step ceilings 30 python3 - <<'EOF'
import json, torch
def bench(fn, iters=20):
    for _ in range(3): fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record(); fn(); end.record(); torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2] / 1e3
n = 8192
a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
for tf32 in (False, True):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    s = bench(lambda: a @ b)
    print(json.dumps({"ceiling": "sgemm_tf32" if tf32 else "sgemm_f32", "tflops": round(2 * n**3 / s / 1e12, 1)}))
x = torch.randn(1 << 30, device="cuda")
y = torch.empty_like(x)
s = bench(lambda: y.copy_(x))
print(json.dumps({"ceiling": "copy", "tb_per_s": round(2 * x.numel() * 4 / s / 1e12, 2)}))
EOF
    }
    tests() {
        step gpu_tests 100 env LD_PRELOAD="$preload" "$dir/bin/cuda_gpu" --ignored gpu
        step validation_table 30 env LD_PRELOAD="$preload" "$dir/bin/validation_table" --nocapture
    }
    loss() {
        step dense_pytorch 50 python3 benches/supcon_dense_pytorch.py --sizes 2048,8192,32768 --dim 128
        step cuda_f32 40 "$dir/bin/bench_cuda" --precision f32 --sizes 2048,8192,32768,131072
        step cuda_tf32 50 "$dir/bin/bench_cuda" --precision tf32 --sizes 2048,8192,32768
    }
    loss-1m() { # one untimed warm-up would double the ~50 s
        step cuda_tf32_1m 80 "$dir/bin/bench_cuda" --precision tf32 --sizes 1000000 --warmup 0
    }
    profile() {
        local ncu
        ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
        for precision in f32 tf32; do
            step "profile_$precision" 60 "$ncu" --clock-control none --metrics gpu__time_duration.sum \
                --csv "$dir/bin/bench_cuda" --precision "$precision" --sizes 8192 --warmup 0 --iters 1
        done
    }
    supcon_run() { # command name limit options...
        local command=$1 name=$2 limit=$3
        shift 3
        step "$name" "$limit" env LD_PRELOAD="$preload" "$dir/bin/supcon" "$command" \
            --preset gpu-fashion --device cuda --data "$data" --runs-dir /tmp/gpu-runs \
            --name "$name" --quiet "$@"
        cp "/tmp/gpu-runs/$name/report.md" "$OUT/$name.md" 2>/dev/null
    }
    supcon_train() { supcon_run train "$@"; }
    train() {
        supcon_train train_cuda 110 --epochs 3 --set pretrain.optim.warmup_epochs=0.5 \
            --set linear.epochs=2 --set eval.robustness=false
        step train_pytorch 50 python3 benches/train_pytorch.py --device cuda --arch resnet18 \
            --batch 512 --workers 12 --threads 4 --warmup-steps 5 --steps 40 --data "$data" --json
    }
    train-cuda-loss() {
        supcon_train train_cuda_loss 60 --epochs 2 --set pretrain.optim.warmup_epochs=0.5 \
            --set pretrain.loss_backend=cuda --set linear.epochs=1 --set eval.robustness=false
    }
    train-long() {
        supcon_train train_long 240 --epochs 30
    }
    ce-long() { # the cross-entropy baseline at train-long's 30 epochs
        supcon_run ce ce_long 240 --epochs 30
    }
    for name in "${steps[@]}"; do
        "$name"
    done
    echo "--- summary"
    cat "$logs/summary.txt"
    (cd "$logs" && grep -h '^{' ./*.log | cut -c1-300)
    (cd "$logs" && grep -h -E "test result|FAILED|panicked|pretrain done|top-1" ./*.log | head -40)
}

case "${1:-}" in
pack) pack ;;
run) shift && run "$@" ;;
*)
    echo "usage: bash benches/gpu_session.sh pack | run [STEP...]" >&2
    exit 2
    ;;
esac
