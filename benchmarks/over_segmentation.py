"""Does a method over- or under-segment an organ on the test set, and where are its wrong voxels?

DSC alone does not say why two methods differ on an organ. IPnP's pseudo-labels are positive evidence: a
specialist learns their wrong voxels, so pseudo-labels larger than the organ show up as a prediction larger
than the reference (BENCHMARKS.md, session 17: OpenKBP's larynx). For each prediction folder and organ this
prints, over the test cases whose reference holds the organ: the mean per-case Dice, the pooled precision and
recall, the predicted volume over the reference volume, and the false-positive voxels within and beyond
``--near`` mm of the reference (near: a boundary too wide; beyond: stray blobs or the wrong place).

    python benchmarks/over_segmentation.py DATASET PRED_DIR [PRED_DIR ...] [--organs 5 6] [--near 10]

A ``PRED_DIR`` is a folder of predicted label maps named like ``DATASET/labelsTs``, e.g. a benchmark's
``runs/<method>/<ratio>/predictions``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from ipnp.data import PartialDataset
from ipnp.data.dataset import read_label
from ipnp.errors import IpnpError


def organ_errors(predicted: np.ndarray, reference: np.ndarray, spacing_zyx: tuple[float, float, float],
                 near_mm: float) -> np.ndarray:
    """(true positives, false negatives, false positives within ``near_mm`` of the reference, beyond it) of
    boolean masks."""
    distance = ndimage.distance_transform_edt(~reference, sampling=spacing_zyx)
    wrong = predicted & ~reference
    return np.array([(predicted & reference).sum(), (reference & ~predicted).sum(),
                     (wrong & (distance <= near_mm)).sum(), (wrong & (distance > near_mm)).sum()])


def print_table(dataset: PartialDataset, folders: list[Path], organs: list[int], near_mm: float) -> None:
    """One row per prediction folder and organ (see the module's docstring)."""
    print(f"{'predictions':<48} {'organ':<14} {'n':>3} {'Dice':>6} {'prec.':>6} {'recall':>6} {'vol.x':>6} "
          f"{'FP near':>8} {'FP far':>8}")
    for folder in folders:
        totals = {o: np.zeros(4, dtype=np.int64) for o in organs}
        dices: dict[int, list[float]] = {o: [] for o in organs}
        for case_id in dataset.test_ids:
            reference, geometry = dataset.case(case_id, "test").load_label()
            predicted, _ = read_label(folder / f"{case_id}{dataset.file_ending}")
            for organ in organs:
                truth = reference == organ
                if not truth.any():
                    continue
                counts = organ_errors(predicted == organ, truth, geometry.spacing_zyx, near_mm)
                totals[organ] += counts
                tp, fn, fp = counts[0], counts[1], counts[2] + counts[3]
                dices[organ].append(2 * tp / (2 * tp + fn + fp))
        for organ in organs:
            tp, fn, near, far = totals[organ]
            if not dices[organ]:
                continue
            precision = tp / (tp + near + far) if tp + near + far else float("nan")
            print(f"{str(folder)[-48:]:<48} {dataset.organ_names[organ][:14]:<14} {len(dices[organ]):>3} "
                  f"{100 * np.mean(dices[organ]):>6.2f} {precision:>6.3f} {tp / (tp + fn):>6.3f} "
                  f"{(tp + near + far) / (tp + fn):>6.2f} {near:>8d} {far:>8d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("predictions", type=Path, nargs="+")
    parser.add_argument("--organs", type=int, nargs="+", help="organ ids (default: every organ)")
    parser.add_argument("--near", type=float, default=10.0, help="mm from the reference that count as near")
    args = parser.parse_args()
    try:
        dataset = PartialDataset(args.dataset)
        print_table(dataset, args.predictions, args.organs or list(dataset.organ_ids), args.near)
    except IpnpError as exc:  # a missing or unreadable file: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
