"""Train-step time of each ipnp trainer against nnU-Net's stock ``nnUNetTrainer``.

Same plans, same pre-drawn batches, interleaved round-robin in one process so that machine noise hits
every trainer alike. Prints the mean step time and the ratio to stock, ``ipnp`` (the VLS trainer) last.

    python benchmarks/trainer_overhead.py --profile tiny --steps 30            # CPU
    python benchmarks/trainer_overhead.py --profile default --device cuda      # GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", choices=["tiny", "quick", "default"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per trainer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per trainer first")
    parser.add_argument("--cases", type=int, default=10, help="phantom training cases")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and nnU-Net files (default: temporary)")
    args = parser.parse_args()

    from ipnp.data.partial import simulate_partial_labels
    from ipnp.data.synth import synthesize_dataset
    from ipnp.data.validate import require_valid
    from ipnp.console import stdout_to_log
    from ipnp.specialist import nnunet_env
    from ipnp.specialist.prepare import PLANS, prepare
    from ipnp.specialist.profiles import get_profile

    import torch

    work = args.work or Path(tempfile.mkdtemp(prefix="ipnp-bench-"))
    full, partial = work / "phantoms", work / "partial33"
    if not partial.exists():
        synthesize_dataset(full, n_train=args.cases, n_test=0, seed=0)
        simulate_partial_labels(full, partial, keep=0.33, seed=0)
    device = nnunet_env.resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    folders = nnunet_env.configure(work / "run", device)
    prepared = prepare(require_valid(partial), folders, get_profile(args.profile), num_processes=2)

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from ipnp.specialist import trainers as t

    contenders = {
        "stock nnUNetTrainer": nnUNetTrainer,
        "full-sup": t.nnUNetTrainer_ipnpFullSup,
        "partial-sup": t.nnUNetTrainer_ipnpPartialSup,
        "marginal": t.nnUNetTrainer_ipnpMarginal,
        "ipnp-novls": t.nnUNetTrainer_ipnpNoVLS,
        "ipnp": t.nnUNetTrainer_ipnpVLS,
    }
    plans = json.loads((prepared.preprocessed / f"{PLANS}.json").read_text())
    dataset_json = json.loads((prepared.preprocessed / "dataset.json").read_text())
    n_batches = args.warmup + args.steps
    built, batches = {}, {}
    with stdout_to_log("nnU-Net"):
        for name, cls in contenders.items():
            trainer = cls(plans=dict(plans, continue_training=False), configuration=prepared.configuration, fold="all",
                          dataset_json=dataset_json, device=device)
            trainer.initialize()
            built[name] = trainer
        # Softmax trainers share one set of batches; partial-sup needs region targets and draws its own.
        loader, _ = built["stock nnUNetTrainer"].get_dataloaders()
        shared = [next(loader) for _ in range(n_batches)]
        region_loader, _ = built["partial-sup"].get_dataloaders()
        regions = [next(region_loader) for _ in range(n_batches)]
    for name in built:
        batches[name] = regions if name == "partial-sup" else shared

    def step(name: str, i: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        built[name].train_step(batches[name][i])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times = {name: [] for name in built}
    for i in range(n_batches):
        for name in built:  # round-robin: every trainer sees the same machine state
            elapsed = step(name, i)
            if i >= args.warmup:
                times[name].append(elapsed)

    stock = sum(times["stock nnUNetTrainer"]) / args.steps
    config = plans["configurations"][prepared.configuration]
    print(f"device {device}, profile {args.profile}, patch {config.get('patch_size', plans['configurations']['3d_fullres']['patch_size'])}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, interleaved")
    print(f"{'trainer':<22} {'ms/step':>9} {'x stock':>8}")
    for name, values in times.items():
        mean = sum(values) / len(values)
        print(f"{name:<22} {mean * 1000:9.1f} {mean / stock:8.3f}")


if __name__ == "__main__":
    main()
