"""Convert the AMOS22 release (CT part) to ipnp's convention.

AMOS is fully labeled, so no ``partial_labels.json`` is written; ``ipnp partial`` simulates partial labels.
Cases numbered above 500 are MRI and are left out. The validation cases (``imagesVa``/``labelsVa``) become
the test split, because labels of AMOS's own test cases are not public.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ipnp.data.dataset import IMAGES_TR, IMAGES_TS, LABELS_TR, LABELS_TS, write_dataset_json
from ipnp.data.io import copy_file, read_header, read_json, staged_dir
from ipnp.data.labels import AMOS_ORGANS
from ipnp.errors import IpnpError

log = logging.getLogger(__name__)

LAST_CT_CASE = 500
_CASE = re.compile(r"amos_(\d+)\.nii\.gz")


@dataclass(frozen=True)
class _Pair:
    case_id: str
    image: Path
    label: Path
    images_dir: str
    labels_dir: str


def convert_amos(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy the CT training and validation cases of the AMOS22 folder ``src`` into a dataset at ``out``."""
    src, out = Path(src), Path(out)
    meta_path = src / "dataset.json"
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise IpnpError(f"{meta_path}: expected a JSON object")
    _check_label_ids(meta, meta_path)

    pairs: list[_Pair] = []
    skipped_mri = 0
    for key, images_dir, labels_dir in (("training", IMAGES_TR, LABELS_TR), ("validation", IMAGES_TS, LABELS_TS)):
        entries = meta.get(key, [])
        if not isinstance(entries, list):
            raise IpnpError(f"{meta_path}: '{key}' must be a list of image/label entries")
        for entry in entries:
            case_id, number, image, label = _parse_entry(entry, src, meta_path, key)
            if number > LAST_CT_CASE:
                skipped_mri += 1
                continue
            pairs.append(_Pair(case_id, image, label, images_dir, labels_dir))
    if not pairs:
        raise IpnpError(f"{meta_path}: lists no CT case (amos_0001..amos_0500) with a label")
    seen = set()
    for pair in pairs:
        if pair.case_id in seen:
            raise IpnpError(f"{meta_path}: case {pair.case_id} is listed twice")
        seen.add(pair.case_id)

    # Check every pair before copying anything: a bad file late in the list should not cost a long copy.
    for pair in tqdm(pairs, desc="amos: checking", unit="case"):
        _check_pair(pair)
    with staged_dir(out, overwrite=overwrite, inputs=(src,)) as tmp:
        for pair in tqdm(pairs, desc="amos: copying", unit="case"):
            copy_file(pair.image, tmp / pair.images_dir / f"{pair.case_id}_0000.nii.gz")
            copy_file(pair.label, tmp / pair.labels_dir / f"{pair.case_id}.nii.gz")
        n_train = sum(p.images_dir == IMAGES_TR for p in pairs)
        write_dataset_json(
            tmp,
            AMOS_ORGANS,
            num_training=n_train,
            channel_names={"0": "CT"},
            description="AMOS22 abdominal CT with 15 organs; training cases from imagesTr, "
            "test cases from the labeled validation set (imagesVa)",
            reference="AMOS, Ji et al., NeurIPS 2022 (https://amos22.grand-challenge.org)",
            licence="CC BY 4.0 (AMOS22 release)",
        )
    log.info(
        "%s: converted %d CT cases (%d training, %d test from validation); skipped %d MRI cases",
        out, len(pairs), n_train, len(pairs) - n_train, skipped_mri,
    )
    return out


def _check_label_ids(meta: dict, where: Path) -> None:
    """AMOS ids are kept as they are, so the release must use the 15 ids that ``AMOS_ORGANS`` names."""
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        raise IpnpError(f"{where}: missing 'labels'")
    try:
        ids = {int(k) for k in labels}
    except ValueError as exc:
        raise IpnpError(f"{where}: 'labels' keys must be label ids ({exc})") from exc
    expected = {0, *AMOS_ORGANS}
    if ids != expected:
        raise IpnpError(f"{where}: label ids {sorted(ids)} differ from AMOS22's 0..{max(AMOS_ORGANS)}")


def _parse_entry(entry: object, src: Path, where: Path, key: str) -> tuple[str, int, Path, Path]:
    """Case id, case number, image and label path of one ``training``/``validation`` entry."""
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("image", "label")):
        raise IpnpError(f"{where}: each '{key}' entry needs 'image' and 'label' paths, found {entry!r}")
    image, label = src / entry["image"], src / entry["label"]
    match = _CASE.fullmatch(image.name)
    if match is None:
        raise IpnpError(f"{where}: image name {entry['image']!r} is not amos_NNNN.nii.gz")
    return image.name[: -len(".nii.gz")], int(match.group(1)), image, label


def _check_pair(pair: _Pair) -> None:
    for path in (pair.image, pair.label):
        if not path.is_file():
            raise IpnpError(f"{path}: listed in dataset.json but missing")
    image_shape, image_geometry, image_channels = read_header(pair.image)
    label_shape, label_geometry, label_channels = read_header(pair.label)
    for path, shape, channels in ((pair.image, image_shape, image_channels), (pair.label, label_shape, label_channels)):
        if len(shape) != 3 or channels != 1:
            raise IpnpError(f"{path}: expected a 3D single-channel image, found shape {shape} x {channels}")
    if label_shape != image_shape:
        raise IpnpError(f"{pair.label}: shape {label_shape} differs from the image's {image_shape}")
    mismatch = image_geometry.mismatch(label_geometry)
    if mismatch:
        raise IpnpError(f"{pair.label}: {mismatch} of the image")
