#!/usr/bin/env bash
# GPU check of the specialist on phantoms: CUDA training (quick profile), prediction and evaluation,
# then the status-aware losses alone and the trainer-overhead benchmark on nnU-Net's own default plans. Run from the repository root with
# ipnp and its dependencies importable by python3.
set -euo pipefail
work=${1:-/tmp/ipnp-gpu}
ipnp() { python3 -m ipnp.cli "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, nnunetv2, ipnp; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
ipnp synth "$work/phantoms" --cases 20 --test-cases 10 --seed 0 --overwrite
ipnp partial "$work/phantoms" "$work/partial33" --keep 0.33 --seed 0 --overwrite
start=$(date +%s)
ipnp train "$work/partial33" --out "$work/run-marginal" --method marginal --profile quick --device cuda
echo "train marginal/quick on cuda: $(( $(date +%s) - start )) s"
start=$(date +%s)
ipnp predict "$work/run-marginal" "$work/partial33/imagesTs" "$work/pred" --device cuda --probabilities --overwrite
echo "predict 10 cases on cuda: $(( $(date +%s) - start )) s"
ipnp evaluate "$work/pred" "$work/partial33/labelsTs" --out "$work/eval"
python3 benchmarks/loss_overhead.py --device cuda
python3 benchmarks/trainer_overhead.py --profile default --device cuda --steps 30 --warmup 5 --work "$work/bench"
