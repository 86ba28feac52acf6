"""Convert OpenKBP head-and-neck CTs with their organ-at-risk contours to ipnp's convention.

The provided data are sparse CSV files on a 128^3 grid; ``docs/openkbp.md`` gives the evidence for the
axis order, the intensity offset and the overlap rule used here.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ipnp.data.dataset import IMAGES_TR, IMAGES_TS, LABELS_TR, LABELS_TS, write_dataset_json, write_manifest
from ipnp.data.io import Geometry, staged_dir, write_image
from ipnp.data.labels import OPENKBP_ORGANS
from ipnp.errors import IpnpError

log = logging.getLogger(__name__)

GRID = (128, 128, 128)
# Stored values are 12-bit CT numbers, HU + 1024; OpenKBP recommends clipping them to 0..4095.
HU_OFFSET = 1024
HU_MIN, HU_MAX = -1024, 3071
_HEADER = ",data"


@dataclass(frozen=True)
class Patient:
    """One converted patient, arrays in (z, y, x) order ready for ``write_image``."""

    hu: np.ndarray
    labels: np.ndarray
    organs: frozenset[int]
    geometry: Geometry


def convert_openkbp(
    src: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "train-pats",
    test_split: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the patients of ``src/split`` (and optionally ``src/test_split``) into a dataset at ``out``.

    ``src`` is OpenKBP's ``provided-data`` folder. Training patients go to ``imagesTr``/``labelsTr``, test
    patients to ``imagesTs``/``labelsTs``; ``partial_labels.json`` lists the contoured OARs of both, since
    a missing contour file means "not contoured", not "absent".
    """
    src, out = Path(src), Path(out)
    if test_split == split:
        raise IpnpError(f"{src / split}: the training and test splits must differ")
    jobs = [(folder, IMAGES_TR, LABELS_TR) for folder in _patient_folders(src / split)]
    if test_split is not None:
        jobs += [(folder, IMAGES_TS, LABELS_TS) for folder in _patient_folders(src / test_split)]
    seen: dict[str, Path] = {}
    for folder, _, _ in jobs:
        if folder.name in seen:
            raise IpnpError(f"{folder}: patient id also used by {seen[folder.name]}")
        seen[folder.name] = folder

    manifest: dict[str, frozenset[int]] = {}
    counts = {IMAGES_TR: 0, IMAGES_TS: 0}
    with staged_dir(out, overwrite=overwrite, inputs=(src,)) as tmp:
        for folder, images, labels in tqdm(jobs, desc="openkbp", unit="patient"):
            patient = read_patient(folder)
            if patient is None:
                log.warning("%s: no ct.csv or ct.csv.gz; patient skipped", folder)
                continue
            write_image(patient.hu, patient.geometry, tmp / images / f"{folder.name}_0000.nii.gz")
            write_image(patient.labels, patient.geometry, tmp / labels / f"{folder.name}.nii.gz")
            manifest[folder.name] = patient.organs
            counts[images] += 1
        if counts[IMAGES_TR] == 0:
            raise IpnpError(f"{src / split}: no patient with a CT")
        write_dataset_json(
            tmp,
            OPENKBP_ORGANS,
            num_training=counts[IMAGES_TR],
            channel_names={"0": "CT"},
            description="OpenKBP head-and-neck CT (HU, 128^3 grid) with seven organs at risk; "
            "labels are partial: partial_labels.json lists each patient's contoured organs",
            reference="OpenKBP, Babier et al., Med Phys 2021",
            licence="MIT (OpenKBP provided-data)",
        )
        write_manifest(tmp, manifest)
    log.info("%s: converted %d training and %d test patients", out, counts[IMAGES_TR], counts[IMAGES_TS])
    return out


def _patient_folders(split_dir: Path) -> list[Path]:
    if not split_dir.is_dir():
        raise IpnpError(f"{split_dir}: split folder not found")
    folders = [p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise IpnpError(f"{split_dir}: no patient folders")
    # Numeric order (pt_2 before pt_10) keeps progress and logs in the order people expect.
    return sorted(folders, key=lambda p: (len(p.name), p.name))


def read_patient(folder: Path) -> Patient | None:
    """Read one patient folder; None when it has no CT."""
    ct_path = _find_csv(folder, "ct")
    if ct_path is None:
        return None
    spacing_path = _find_csv(folder, "voxel_dimensions")
    if spacing_path is None:
        raise IpnpError(f"{folder}: voxel_dimensions.csv missing")
    geometry = _read_geometry(spacing_path)

    index, values = _read_sparse(ct_path, with_values=True)
    hu = np.full(GRID, HU_MIN, dtype=np.int16)
    hu[_to_zyx(index)] = np.clip(np.rint(values) - HU_OFFSET, HU_MIN, HU_MAX)

    masks = {}
    for organ, name in OPENKBP_ORGANS.items():
        path = _find_csv(folder, name)
        if path is not None:
            masks[organ] = np.unique(_read_sparse(path, with_values=False)[0])
    labels = np.zeros(GRID, dtype=np.uint8)
    # Where contours overlap the smaller structure wins (ties: the lower id): painting largest first
    # lets small structures such as the brainstem keep the voxels they share with bigger ones.
    for organ in sorted(masks, key=lambda o: (-masks[o].size, -o)):
        labels[_to_zyx(masks[organ])] = organ
    return Patient(hu=hu, labels=labels, organs=frozenset(masks), geometry=geometry)


def _to_zyx(flat_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map OpenKBP flat indices to (z, y, x) positions of an LPS image with identity direction.

    OpenKBP's C-order axes run anterior->posterior, right->left and superior->inferior; ITK's +z points
    superior, so the slice axis is reversed and the other two become y and x unchanged.
    """
    a0, a1, a2 = np.unravel_index(flat_index, GRID)
    return GRID[2] - 1 - a2, a0, a1


def _read_geometry(path: Path) -> Geometry:
    try:
        sizes = np.loadtxt(io.StringIO(_read_text(path)), dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise IpnpError(f"{path}: malformed voxel dimensions ({exc})") from exc
    if sizes.shape != (3,) or not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise IpnpError(f"{path}: expected three positive voxel sizes in mm, found {sizes.ravel().tolist()}")
    # The sizes follow OpenKBP's axis order (the third is the slice spacing), so a1 -> x and a0 -> y.
    return Geometry.from_spacing((sizes[1], sizes[0], sizes[2]))


def _read_sparse(path: Path, *, with_values: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat voxel indices (and the ``data`` column when asked) of a sparse OpenKBP CSV."""
    text = _read_text(path)
    header, _, body = text.partition("\n")
    if header.strip() != _HEADER:
        raise IpnpError(f"{path}: expected the header '{_HEADER}', found {header.strip()[:40]!r}")
    if not body.strip():
        if with_values:
            raise IpnpError(f"{path}: holds no voxels")
        return np.zeros(0, dtype=np.int64), None
    try:
        table = np.loadtxt(
            io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2, usecols=(0, 1) if with_values else (0,)
        )
    except ValueError as exc:
        raise IpnpError(f"{path}: malformed CSV ({exc})") from exc
    index = table[:, 0]
    size = int(np.prod(GRID))
    if not np.all((index == np.rint(index)) & (index >= 0) & (index < size)):
        raise IpnpError(f"{path}: voxel indices must be integers in 0..{size - 1}")
    if not with_values:
        return index.astype(np.int64), None
    values = table[:, 1]
    if not np.all(np.isfinite(values)):
        raise IpnpError(f"{path}: non-finite CT values")
    return index.astype(np.int64), values


def _find_csv(folder: Path, stem: str) -> Path | None:
    """``<stem>.csv`` or ``<stem>.csv.gz`` in ``folder``: the release is plain, compressed copies are common."""
    found = [p for p in (folder / f"{stem}.csv", folder / f"{stem}.csv.gz") if p.is_file()]
    if len(found) > 1:
        raise IpnpError(f"{found[0]}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def _read_text(path: Path) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="ascii") as f:
                return f.read()
        return path.read_text(encoding="ascii")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise IpnpError(f"{path}: cannot read ({exc})") from exc
