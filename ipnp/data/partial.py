"""The paper's simulated partial-label setting: drop a random share of each training case's organs."""

from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from ipnp.data.dataset import (
    IMAGES_TR,
    IMAGES_TS,
    LABELS_TR,
    LABELS_TR_FULL,
    LABELS_TS,
    write_manifest,
)
from ipnp.data.io import copy_file, read_json, staged_dir, write_image, write_json
from ipnp.data.validate import require_valid
from ipnp.errors import IpnpError


def n_kept(keep: float, n_present: int) -> int:
    """``round(keep * n_present)`` with halves rounded up, and at least one organ."""
    return max(1, int(np.floor(keep * n_present + 0.5)))


def _check_keep(keep: float) -> None:
    if not 0.0 < keep <= 1.0:
        raise IpnpError(f"--keep {keep}: must lie in (0, 1]")


def choose_labeled_organs(
    present: dict[str, set[int]], keep: float, seed: int
) -> dict[str, frozenset[int]]:
    """Pick, per case, ``n_kept(keep, |present|)`` of its present organs uniformly at random.

    Cases are visited in sorted order with one generator, so the choice depends only on the seed and
    on the cases' contents.
    """
    _check_keep(keep)
    rng = np.random.default_rng(seed)
    chosen = {}
    for case_id in sorted(present):
        organs = sorted(present[case_id])
        k = min(len(organs), n_kept(keep, len(organs)))
        chosen[case_id] = frozenset(int(i) for i in rng.choice(organs, size=k, replace=False)) if organs else frozenset()
    return chosen


def simulate_partial_labels(
    src: str | os.PathLike, out: str | os.PathLike, *, keep: float = 0.67, seed: int = 0, overwrite: bool = False
) -> dict[int, int]:
    """Write a copy of a fully labeled dataset in which each training case keeps only some organs.

    Dropped organs become 0 in ``labelsTr``; the complete labels go to ``labelsTr_full/``;
    ``partial_labels.json`` records what was kept. The test split is copied unchanged. Returns the
    number of training cases in which each organ id stays labeled.
    """
    _check_keep(keep)
    ds = require_valid(src)
    if ds.is_partial:
        raise IpnpError(f"{ds.root}: already partially labeled (see partial_labels.json); start from full labels")
    present = {
        c.case_id: set(np.unique(c.load_label()[0]).tolist()) - {0}
        for c in tqdm(ds.cases("train"), desc="read labels", unit="case", leave=False)
    }
    chosen = choose_labeled_organs(present, keep, seed)
    counts = {i: sum(i in organs for organs in chosen.values()) for i in ds.organ_ids}
    if missing := [f"{ds.organ_names[i]} (id {i})" for i, n in counts.items() if n == 0]:
        raise IpnpError(
            f"{ds.root}: with --keep {keep} --seed {seed}, {', '.join(missing)} would be labeled in no training case; "
            "raise --keep or try another --seed"
        )
    with staged_dir(out, overwrite=overwrite, inputs=(ds.root,)) as tmp:
        dataset_json = read_json(ds.root / "dataset.json")
        dataset_json["ipnp"] = {**dataset_json.get("ipnp", {}), "partial": {"keep": keep, "seed": seed, "source": str(ds.root)}}
        write_json(dataset_json, tmp / "dataset.json")
        for folder in (IMAGES_TR, LABELS_TR, LABELS_TR_FULL):
            (tmp / folder).mkdir()
        for case in tqdm(ds.cases("train"), desc="partial labels", unit="case"):
            for path in case.image_paths:
                copy_file(path, tmp / IMAGES_TR / path.name)
            copy_file(case.label_path, tmp / LABELS_TR_FULL / case.label_path.name)
            label, geometry = case.load_label()
            dropped = ~np.isin(label, sorted(chosen[case.case_id]))
            write_image(np.where(dropped, 0, label).astype(np.uint8), geometry, tmp / LABELS_TR / case.label_path.name)
        for folder in (IMAGES_TS, LABELS_TS):
            if (ds.root / folder).is_dir():
                (tmp / folder).mkdir()
                for path in sorted((ds.root / folder).iterdir()):
                    if path.is_file():
                        copy_file(path, tmp / folder / path.name)
        write_manifest(tmp, chosen)
    return counts
