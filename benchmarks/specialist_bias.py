"""How well does a specialist segment an organ on training cases that lack its label, against unseen cases?

IPnP makes pseudo-labels from the specialist's predictions of organs that a *training* case does not label.
A specialist trained with the marginal loss is never penalised for predicting such an organ on that case's
background, so its masks there may be worse than on cases it has never seen. This script measures that on a
simulated dataset (``labelsTr_full`` holds the complete labels): it predicts every training and test case with
one trained specialist and prints, per organ, the mean Dice and precision of its argmax masks on

- training cases that label the organ (seen with this label),
- training cases that lack it (what pseudo-labels are made from),
- test cases (unseen).

    python benchmarks/specialist_bias.py RUN/specialist DATASET [--device cpu]
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

GROUPS = ("labelled", "unlabelled", "test")


def score(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float | None]:
    """Dice and precision (None for an empty mask) of a predicted mask."""
    from ipnp.pseudo.candidate import dice

    voxels = int(mask.sum())
    return dice(mask, truth), (int((mask & truth).sum()) / voxels if voxels else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specialist", type=Path, help="a trained specialist's folder (RUN/specialist)")
    parser.add_argument("dataset", type=Path, help="a simulated partial dataset with labelsTr_full/")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    os.environ.setdefault("nnUNet_compile", "f")
    from tqdm import tqdm

    from ipnp.data.dataset import PartialDataset
    from ipnp.specialist.predict import Specialist

    dataset = PartialDataset(args.dataset)
    specialist = Specialist(args.specialist, device=args.device)
    cases = [(dataset.case(c), dataset.labeled_organs(c)) for c in dataset.training_ids]
    cases += [(dataset.case(c, "test"), None) for c in dataset.test_ids]
    scores: dict[tuple[int, str], list[tuple[float, float | None]]] = defaultdict(list)
    for case, labelled in tqdm(cases, desc="predict", unit="case"):
        predicted, _ = specialist.predict(*case.load_image())
        truth = case.load_full_label()[0] if labelled is not None else case.load_label()[0]
        for organ in dataset.organ_ids:
            if not (truth == organ).any():
                continue
            group = "test" if labelled is None else ("labelled" if organ in labelled else "unlabelled")
            scores[organ, group].append(score(predicted == organ, truth == organ))

    print(f"specialist {args.specialist}; dataset {args.dataset}")
    print("| organ | " + " | ".join(f"{g}: Dice / precision (n)" for g in GROUPS) + " |")
    print("|:---|" + "---:|" * len(GROUPS))
    means = defaultdict(list)
    for organ in dataset.organ_ids:
        cells = []
        for group in GROUPS:
            pairs = scores.get((organ, group), [])
            if not pairs:
                cells.append("–")
                continue
            dice = float(np.mean([d for d, _ in pairs]))
            precisions = [p for _, p in pairs if p is not None]
            precision = f"{np.mean(precisions):.2f}" if precisions else "–"
            means[group].append(dice)
            cells.append(f"{dice:.2f} / {precision} ({len(pairs)})")
        print(f"| {dataset.organ_names.get(organ, organ)} | " + " | ".join(cells) + " |")
    print("| **mean Dice of organs** | " + " | ".join(f"{np.mean(means[g]):.3f}" if means[g] else "–" for g in GROUPS) + " |")


if __name__ == "__main__":
    main()
