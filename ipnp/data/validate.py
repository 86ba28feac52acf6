"""Dataset checks: every problem becomes one line that names the file or case and what is wrong.

``ipnp validate`` prints them all; every other command calls :func:`require_valid` before it starts work.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ipnp.data.dataset import (
    IMAGES_TR,
    IMAGES_TS,
    LABELS_TR,
    LABELS_TR_FULL,
    LABELS_TS,
    MANIFEST,
    PartialDataset,
)
from ipnp.data.io import Geometry, read_header, read_voxels
from ipnp.errors import IpnpError

log = logging.getLogger(__name__)


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: Severity
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.where}: {self.message}"


class _Collector(list):
    def error(self, where: object, message: str) -> None:
        self.append(Problem(Severity.ERROR, str(where), message))

    def warning(self, where: object, message: str) -> None:
        self.append(Problem(Severity.WARNING, str(where), message))


def validate_dataset(root: str | os.PathLike, *, progress: bool = True) -> list[Problem]:
    """Check a dataset folder against ipnp's convention and return every problem found."""
    problems = _Collector()
    try:
        ds = PartialDataset(root)
    except IpnpError as exc:
        where, _, message = str(exc).partition(": ")
        problems.error(where, message)
        return list(problems)
    if not ds.training_ids:
        problems.error(ds.root / IMAGES_TR, f"no training images named <case>_0000{ds.file_ending}")
    _check_stray_files(ds, problems)
    masks_seen: dict[str, set[int]] = {}
    splits = [("train", cid) for cid in ds.training_ids] + [("test", cid) for cid in ds.test_ids]
    for split, case_id in tqdm(splits, desc="validate", unit="case", disable=not progress, leave=False):
        present = _check_case(ds, case_id, split, problems)
        if present is not None:
            masks_seen[case_id] = present
    _check_manifest(ds, masks_seen, problems)
    return list(problems)


def require_valid(root: str | os.PathLike) -> PartialDataset:
    """Open a dataset, raising one clear :class:`IpnpError` if it has errors; warnings are logged."""
    problems = validate_dataset(root)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    for p in problems:
        if p.severity is Severity.WARNING:
            log.warning("%s: %s", p.where, p.message)
    if errors:
        more = f" (and {len(errors) - 1} more problem(s); run 'ipnp validate {root}')" if len(errors) > 1 else ""
        raise IpnpError(f"{errors[0].where}: {errors[0].message}{more}")
    return PartialDataset(root)


def require_valid_labels(ds: PartialDataset, labels_dir: str | os.PathLike) -> None:
    """Check a folder of label maps that replaces ``labelsTr`` (e.g. merged pseudo-labels) against the images."""
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise IpnpError(f"{labels_dir}: labels folder not found")
    problems = _Collector()
    for case_id in ds.training_ids:
        shape, geometry, _ = read_header(ds.image_paths(case_id)[0])
        _check_label(ds, labels_dir / f"{case_id}{ds.file_ending}", (shape, geometry), problems)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise IpnpError(f"{first.where}: {first.message}{more}")


def _check_stray_files(ds: PartialDataset, problems: _Collector) -> None:
    """Labels without images and image channels beyond those declared in dataset.json."""
    for image_dir, label_dir, ids in ((IMAGES_TR, LABELS_TR, ds.training_ids), (IMAGES_TS, LABELS_TS, ds.test_ids)):
        for folder in (ds.root / label_dir, ds.root / LABELS_TR_FULL) if label_dir == LABELS_TR else (ds.root / label_dir,):
            for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
                if name.endswith(ds.file_ending) and name[: -len(ds.file_ending)] not in ids:
                    problems.error(folder / name, f"label has no image in {image_dir}/")
        folder = ds.root / image_dir
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            stem = name[: -len(ds.file_ending)] if name.endswith(ds.file_ending) else None
            if stem and len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() and int(stem[-4:]) >= ds.num_channels:
                problems.error(
                    folder / name, f"channel {stem[-4:]} is not declared (dataset.json has {ds.num_channels} channel(s))"
                )


def _check_case(ds: PartialDataset, case_id: str, split: str, problems: _Collector) -> set[int] | None:
    """Check one case; return the organ ids present in its label mask (None if it could not be read)."""
    case = ds.case(case_id, split)
    reference: tuple[tuple[int, ...], Geometry] | None = None
    for path in case.image_paths:
        if not path.is_file():
            problems.error(path, f"case {case_id}: image channel file is missing")
            continue
        try:
            shape, geometry, components = read_header(path)
            array = read_voxels(path)
        except IpnpError as exc:
            problems.error(path, _reason(exc, path))
            continue
        if len(shape) != 3 or components != 1:
            problems.error(path, f"expected a 3D single-channel image, found shape {shape} with {components} component(s)")
            continue
        if reference is None:
            reference = (shape, geometry)
            _check_spacing(path, geometry, problems)
        elif shape != reference[0] or geometry.mismatch(reference[1]):
            problems.error(path, "channels differ in shape or geometry")
        finite = np.isfinite(array)
        if not finite.all():
            problems.error(path, f"image holds {int((~finite).sum())} NaN or infinite voxel(s)")
        elif array.size and array.min() == array.max():
            problems.error(path, f"image is constant (every voxel is {array.flat[0]:g})")
    if split == "train" or case.label_path is not None:
        label_dir = LABELS_TR if split == "train" else LABELS_TS
        label_path = ds.root / label_dir / f"{case_id}{ds.file_ending}"
        present = _check_label(ds, label_path, reference, problems)
        if split == "train" and (ds.root / LABELS_TR_FULL).is_dir():
            full_path = ds.root / LABELS_TR_FULL / f"{case_id}{ds.file_ending}"
            if not full_path.is_file():
                problems.warning(full_path, "complete label is missing; pseudo-labels of this case cannot be scored")
            else:
                _check_label(ds, full_path, reference, problems)
        return present
    return None


def _reason(exc: IpnpError, path: Path) -> str:
    """The message of an error raised about ``path``, without the path it starts with."""
    return str(exc).removeprefix(f"{path}: ")


def _check_spacing(path: Path, geometry: Geometry, problems: _Collector) -> None:
    if any(not np.isfinite(s) or s <= 0 for s in geometry.spacing):
        problems.error(path, f"spacing {geometry.spacing} must be positive")


def _check_label(
    ds: PartialDataset, path: Path, reference: tuple[tuple[int, ...], Geometry] | None, problems: _Collector
) -> set[int] | None:
    if not path.is_file():
        problems.error(path, "label file is missing")
        return None
    try:
        shape, geometry, _ = read_header(path)
        array = read_voxels(path)
    except IpnpError as exc:
        problems.error(path, _reason(exc, path))
        return None
    if reference is not None:
        if shape != reference[0]:
            problems.error(path, f"label shape {shape} differs from image shape {reference[0]}")
        elif mismatch := reference[1].mismatch(geometry):
            problems.error(path, f"label {mismatch} of the image")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.isfinite(array).all() or np.any(array != np.round(array)):
            problems.error(path, f"label map holds non-integer values (dtype {array.dtype})")
            return None
    values = set(int(v) for v in np.unique(array))
    undeclared = sorted(values - {0, *ds.organ_ids})
    if undeclared:
        problems.error(path, f"label ids {undeclared} are not declared in dataset.json")
    return values - {0}


def _check_manifest(ds: PartialDataset, masks: dict[str, set[int]], problems: _Collector) -> None:
    where = ds.root / MANIFEST
    if ds.manifest is not None:
        known = set(ds.training_ids) | set(ds.test_ids)
        for case_id, organs in ds.manifest.items():
            if case_id not in known:
                problems.error(where, f"case {case_id} has no image in {IMAGES_TR}/ or {IMAGES_TS}/")
                continue
            unknown = sorted(organs - set(ds.organ_ids))
            if unknown:
                problems.error(where, f"case {case_id}: organ ids {unknown} are not declared in dataset.json")
    for case_id, present in masks.items():
        labeled = ds.labeled_organs(case_id)
        if unlisted := sorted(present - labeled):
            names = ", ".join(ds.organ_names.get(i, str(i)) for i in unlisted if i in ds.organ_names)
            if names:
                problems.error(where, f"case {case_id}: mask contains {names}, which the manifest does not list as labeled")
        if ds.manifest is not None and case_id in ds.manifest:
            for organ in sorted(labeled - present):
                problems.warning(where, f"case {case_id}: {ds.organ_names[organ]} is listed as labeled but absent from its mask")
    if ds.training_ids:
        counts = {i: sum(i in ds.labeled_organs(c) and i in masks.get(c, {i}) for c in ds.training_ids) for i in ds.organ_ids}
        for organ, n in counts.items():
            if n == 0:
                problems.error(ds.root / LABELS_TR, f"{ds.organ_names[organ]} (id {organ}) is labeled in no training case")
