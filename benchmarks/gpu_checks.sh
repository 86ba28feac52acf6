#!/usr/bin/env bash
# The GPU checks that fit a short device lease, in order of what they settle. Run from the repository root
# with ipnp and its dependencies importable by python3; logs go to LOGS (default /tmp/ipnp-gpu-logs).
#
#   bash benchmarks/gpu_checks.sh [LOGS]          # ROUND_ARGS="--skip-ct --epochs 10": a shorter round stage
#
# 1. The status-aware losses alone, then every trainer's step time against stock nnUNetTrainer on nnU-Net's
#    own `3d_fullres` plan for the phantoms, on an otherwise idle GPU (issue 3's overhead goal, <= 1.05x).
# 2. Then, side by side: tests/test_cuda.py (nnInteractive's session and server on CUDA, the VLS specialist
#    trained and used on CUDA), and one pseudo-labeling round with the specialist on CUDA and the classical
#    generalist on one CPU thread (issue 4's round-time ratio and the CT-sized peak RSS).
# Each stage has its own time limit, so a slow stage costs its own log, not the others'.
set -uo pipefail
logs=${1:-/tmp/ipnp-gpu-logs}
mkdir -p "$logs"
stage() {  # seconds log command...
    local seconds=$1 log=$2; shift 2
    local start=$SECONDS
    PYTHONUNBUFFERED=1 timeout "$seconds" "$@" > "$logs/$log" 2>&1
    echo "$log: exit $? after $(( SECONDS - start )) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$logs/machine.txt"
python3 -c "import torch, nnunetv2, ipnp; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    | tee -a "$logs/machine.txt"
stage 60 loss_overhead.log python3 benchmarks/loss_overhead.py --device cuda --steps 20 --warmup 5
stage 180 trainer_overhead.log python3 benchmarks/trainer_overhead.py --profile default --device cuda \
    --steps 30 --warmup 5 --work /tmp/ipnp-trainer-overhead
stage 240 test_cuda.log python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py &
# One CPU thread for the round, as in the CPU measurements; the specialist trains with augmentation workers.
OMP_NUM_THREADS=1 nnUNet_n_proc_DA=8 stage 280 pseudo_label_round.log python3 benchmarks/pseudo_label_round.py --generalist classical \
    --device cuda --epochs 25 --iterations 50 --rss-limit-gib 40 --work /tmp/ipnp-round-bench ${ROUND_ARGS:-} &
wait
tail -n 3 "$logs"/*.log
