#!/usr/bin/env bash
# The phantom benchmark on one GPU: each column is its own `ipnp benchmark` process, all running at once on
# the GPU, then merged by benchmarks/merge_seed_runs.py. Run from the repository root with ipnp and its
# dependencies importable by python3:
#
#   bash benchmarks/gpu_phantom_benchmark.sh WORK EPOCHS KEEP SEED
#
# Columns: full-labels, marginal and ipnp on the `default` profile (nnU-Net's own plans and recipe, the
# paper's round fractions) cut to EPOCHS, and `ipnp-late`, the same ipnp with the rounds at 70/80/90 %
# (benchmarks/configs/late_rounds.yaml). WORK/merged holds the first three; WORK/ipnp-late its own table.
set -euo pipefail
work=$1 epochs=$2 keep=$3 seed=$4
here=$(cd "$(dirname "$0")" && pwd)
ipnp() { python3 -m ipnp.cli "$@"; }
mkdir -p "$work"
[ -d "$work/PH" ] || ipnp synth "$work/PH" --cases 20 --test-cases 10 --seed 0 > "$work/synth.log" 2>&1
column() {  # out method [--config FILE]
    local out=$1 method=$2; shift 2
    # Four trainings share 16 cores: a few augmentation workers each, and no torch.compile warm-up.
    nnUNet_n_proc_DA=3 nnUNet_compile=f OMP_NUM_THREADS=2 ipnp benchmark "$work/PH" --keep "$keep" \
        --methods "$method" --profile default --epochs "$epochs" --seed "$seed" --device cuda \
        --out "$work/$out" "$@" > "$work/$out.log" 2>&1
}
column full-labels full-labels &
column marginal marginal &
column ipnp ipnp &
column ipnp-late ipnp --config "$here/configs/late_rounds.yaml" &
wait
python3 "$here/merge_seed_runs.py" "$work/merged" "$work/full-labels" "$work/marginal" "$work/ipnp"
