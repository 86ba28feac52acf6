"""Score a generalist with ground-truth prompts: the upper bound of what IPnP's prompting can give it.

For every case and every labeled organ present in its reference, the two box prompts are made from the
reference mask itself (``box_prompts``, axes from the image's direction), the generalist answers, and its
mask is scored by Dice against the reference. Writes ``per_organ.csv`` and ``summary.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ipnp.data.dataset import PartialDataset
from ipnp.data.io import ensure_dir, refuse_output_inside, write_csv, write_json
from ipnp.errors import IpnpError
from ipnp.evaluation.metrics import dice
from ipnp.generalist.base import Generalist
from ipnp.pseudo.prompts import anatomical_axes, box_prompts

PER_ORGAN_CSV, SUMMARY_JSON = "per_organ.csv", "summary.json"
CSV_COLUMNS = ("case", "organ_id", "organ", "dice", "seconds", "voxels")


def evaluate_generalist(
    dataset_root: str | os.PathLike,
    generalist: Generalist,
    out_dir: str | os.PathLike,
    cases: list[str] | None = None,
    split: str = "train",
    padding: int = 6,
) -> dict:
    """Prompt ``generalist`` with each reference organ's boxes and score its masks; returns the summary.

    ``cases`` defaults to every case of ``split`` ("train" or "test"). Organs a case does not label
    (``partial_labels.json``) are unknown there and not scored; labeled organs absent from the reference
    have no prompts and are skipped. Seconds are those of ``segment`` alone, not of ``set_image``.
    """
    dataset = PartialDataset(dataset_root)
    out_dir = Path(out_dir)
    refuse_output_inside(out_dir, dataset.root)
    if split not in ("train", "test"):
        raise IpnpError(f"split must be 'train' or 'test', not {split!r}")
    ids = list(cases) if cases is not None else (dataset.training_ids if split == "train" else dataset.test_ids)
    if not ids:
        raise IpnpError(f"{dataset.root}: no {split} cases to evaluate")
    # Open every case first so that a misspelt case id fails before the slow part.
    opened = [dataset.case(case_id, split) for case_id in ids]

    rows: list[tuple[str, int, str, float, float, int]] = []
    for case in tqdm(opened, desc=f"generalist-eval {generalist.name}", unit="case"):
        image, geometry = case.load_image()
        label, _ = case.load_label()
        if label.shape != image.shape[1:]:
            raise IpnpError(f"{case.label_path}: shape {label.shape} differs from the image's {image.shape[1:]}")
        axes = anatomical_axes(geometry.direction)
        # A generalist sees one channel; the first is the CT in every dataset ipnp converts.
        generalist.set_image(image[0], geometry.spacing_zyx)
        present = set(np.unique(label).tolist())
        for organ in sorted(case.labeled & present):
            reference = label == organ
            prompts = box_prompts(reference, padding=padding, axes=axes)
            start = time.perf_counter()
            mask = generalist.segment(prompts)
            seconds = time.perf_counter() - start
            if mask.shape != reference.shape:
                raise IpnpError(
                    f"{generalist.name}: mask shape {mask.shape} differs from the image's {reference.shape}"
                )
            name = dataset.organ_names[organ]
            rows.append((case.case_id, organ, name, dice(mask, reference), seconds, int(reference.sum())))

    summary = _summarize(rows, dataset.organ_names, generalist.name, len(opened), split)
    ensure_dir(out_dir)
    write_csv(
        CSV_COLUMNS,
        [[case_id, organ, name, f"{score:.6f}", f"{seconds:.4f}", voxels] for case_id, organ, name, score, seconds, voxels in rows],
        out_dir / PER_ORGAN_CSV,
    )
    write_json(summary, out_dir / SUMMARY_JSON)
    return summary


def _summarize(
    rows: list[tuple[str, int, str, float, float, int]],
    names: dict[int, str],
    generalist: str,
    n_cases: int,
    split: str,
) -> dict:
    organs = {}
    for organ, name in names.items():
        mine = [r for r in rows if r[1] == organ]
        if mine:
            organs[name] = {
                "dice": float(np.mean([r[3] for r in mine])),
                "seconds": float(np.mean([r[4] for r in mine])),
                "n": len(mine),
            }
    # Every organ weighs the same, however often it is labeled (the paper's "Average").
    return {
        "generalist": generalist,
        "split": split,
        "cases": n_cases,
        "mean_dice": float(np.mean([o["dice"] for o in organs.values()])) if organs else None,
        "seconds_per_organ": float(np.mean([r[4] for r in rows])) if rows else None,
        "organs": organs,
    }
