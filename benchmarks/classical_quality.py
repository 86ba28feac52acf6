"""Ground-truth-prompt quality of the classical generalist on phantoms and on OpenKBP.

Converts OpenKBP's patients and synthesizes phantoms into ``--work`` (kept for reuse), prompts every
labeled organ with boxes from its reference (``evaluate_generalist``) and prints a per-organ table of
Dice and seconds per organ. Results land in ``--work/eval-<dataset>``.

    python benchmarks/classical_quality.py --openkbp /work/shared/data/openkbp --split train-pats
    python benchmarks/classical_quality.py --phantoms 6 --seed 7 --no-openkbp
    python benchmarks/classical_quality.py --phantoms 2 --max-cases 8 --work /tmp/cq   # a quick look

Seconds are wall-clock seconds of ``segment`` alone: on a busy machine they include waiting for a core.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openkbp", type=Path, default=Path("/work/shared/data/openkbp"), help="OpenKBP provided-data")
    parser.add_argument("--split", default="train-pats", help="OpenKBP split to score (train-pats or validation-pats)")
    parser.add_argument("--no-openkbp", action="store_true", help="score phantoms only")
    parser.add_argument("--phantoms", type=int, default=6, help="phantom cases to score (0: none)")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and results (default: temporary)")
    parser.add_argument("--max-cases", type=int, default=None, help="score only the first N cases of each dataset")
    args = parser.parse_args()

    from ipnp.data.convert.openkbp import convert_openkbp
    from ipnp.data.dataset import PartialDataset
    from ipnp.data.synth import synthesize_dataset
    from ipnp.generalist.classical import ClassicalGeneralist
    from ipnp.generalist.evaluate import evaluate_generalist

    work = args.work or Path(tempfile.mkdtemp(prefix="ipnp-classical-"))
    runs = []
    if args.phantoms:
        phantoms = work / f"phantoms-seed{args.seed}"
        if not phantoms.exists():
            synthesize_dataset(phantoms, n_train=args.phantoms, n_test=0, seed=args.seed)
        runs.append((f"phantoms (seed {args.seed}, {args.phantoms} cases)", phantoms))
    if not args.no_openkbp:
        openkbp = work / f"openkbp-{args.split}"
        if not openkbp.exists():
            convert_openkbp(args.openkbp, openkbp, split=args.split)
        runs.append((f"OpenKBP {args.split}", openkbp))

    for title, root in runs:
        cases = PartialDataset(root).training_ids[: args.max_cases] if args.max_cases else None
        summary = evaluate_generalist(root, ClassicalGeneralist(), work / f"eval-{root.name}", cases=cases)
        print(f"\n## {title}: {summary['cases']} cases\n")
        print("| organ | Dice | s/organ | n |\n|:---|---:|---:|---:|")
        for name, organ in summary["organs"].items():
            print(f"| {name} | {organ['dice']:.3f} | {organ['seconds']:.2f} | {organ['n']} |")
        print(f"| **mean of organs** | **{summary['mean_dice']:.3f}** | {summary['seconds_per_organ']:.2f} | |")
    print(f"\nresults in {work}")


if __name__ == "__main__":
    main()
