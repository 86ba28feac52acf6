"""The partial-label dataset convention and a small read-only API over it.

A dataset is an nnU-Net v2 raw folder (``dataset.json``, ``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, optional ``imagesTs/``, ``labelsTs/``) plus two optional extras:

- ``partial_labels.json``: ``{case: [organ ids or names that were annotated]}`` for training cases (and
  for test cases whose references are partial too). In a case's label mask, voxels of unlisted organs are
  0 but mean *unknown*, not background. A case missing from the file, or every case when there is no
  file, is fully labeled.
- ``labelsTr_full/``: complete labels, for scoring pseudo-labels in simulations only. Training never reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ipnp.data.io import Geometry, read_header, read_image, read_json, write_json
from ipnp.errors import IpnpError

DATASET_JSON = "dataset.json"
MANIFEST = "partial_labels.json"
IMAGES_TR, LABELS_TR, LABELS_TR_FULL = "imagesTr", "labelsTr", "labelsTr_full"
IMAGES_TS, LABELS_TS = "imagesTs", "labelsTs"


@dataclass(frozen=True)
class Case:
    """One case of a dataset; nothing is read from disk until asked for."""

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None
    labeled: frozenset[int]
    unknown: frozenset[int]
    full_label_path: Path | None = None

    @property
    def geometry(self) -> Geometry:
        return read_header(self.image_paths[0])[1]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape (z, y, x) of the image, read from its header."""
        return read_header(self.image_paths[0])[0]

    def load_image(self) -> tuple[np.ndarray, Geometry]:
        """All channels as a float32 (c, z, y, x) array, plus the geometry of channel 0."""
        arrays, geometry = [], None
        for path in self.image_paths:
            array, g = read_image(path)
            arrays.append(array.astype(np.float32, copy=False))
            geometry = geometry or g
        return np.stack(arrays), geometry

    def load_label(self) -> tuple[np.ndarray, Geometry]:
        """The (partial) label map as a uint8 (z, y, x) array."""
        if self.label_path is None:
            raise IpnpError(f"case {self.case_id}: has no label file")
        return read_label(self.label_path)

    def load_full_label(self) -> tuple[np.ndarray, Geometry]:
        """The complete label map from ``labelsTr_full``, for scoring only."""
        if self.full_label_path is None:
            raise IpnpError(f"case {self.case_id}: has no complete label in {LABELS_TR_FULL}/")
        return read_label(self.full_label_path)


def read_label(path: Path) -> tuple[np.ndarray, Geometry]:
    """A label map as uint8 (z, y, x); non-integer values or ids outside 0..255 raise IpnpError."""
    array, geometry = read_image(path)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise IpnpError(f"{path}: label map holds non-integer values")
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise IpnpError(f"{path}: label ids must lie in 0..255")
    return array.astype(np.uint8), geometry


def parse_manifest(raw: object, where: Path, by_name: dict[str, int]) -> dict[str, frozenset[int]]:
    """A parsed ``partial_labels.json``: case -> organ ids, with organ names resolved through ``by_name``.

    Whether the ids are declared is left to the caller, which knows the label set.
    """
    if not isinstance(raw, dict):
        raise IpnpError(f"{where}: expected an object mapping case ids to lists of organ ids")
    manifest = {}
    for case_id, organs in raw.items():
        if not isinstance(organs, list):
            raise IpnpError(f"{where}: case {case_id}: expected a list of organ ids, got {organs!r}")
        ids = set()
        for organ in organs:
            organ = by_name.get(organ, organ) if isinstance(organ, str) else organ
            if isinstance(organ, bool) or not isinstance(organ, int):
                raise IpnpError(f"{where}: case {case_id}: unknown organ {organ!r}")
            ids.add(organ)
        manifest[case_id] = frozenset(ids)
    return manifest


@dataclass
class PartialDataset:
    """A dataset folder in ipnp's convention, opened read-only.

    >>> ds = PartialDataset("Dataset/")                       # doctest: +SKIP
    >>> case = ds.case(ds.training_ids[0]); case.unknown      # doctest: +SKIP
    frozenset({4, 9})
    """

    root: Path
    dataset_json: dict = field(init=False, repr=False)
    manifest: dict[str, frozenset[int]] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise IpnpError(f"{self.root}: dataset folder not found")
        self.dataset_json = read_json(self.root / DATASET_JSON)
        self._check_dataset_json()
        manifest_path = self.root / MANIFEST
        by_name = {name: i for name, i in self.dataset_json["labels"].items()}
        self.manifest = parse_manifest(read_json(manifest_path), manifest_path, by_name) if manifest_path.is_file() else None

    def _check_dataset_json(self) -> None:
        where = self.root / DATASET_JSON
        for key in ("labels", "channel_names", "file_ending"):
            if key not in self.dataset_json:
                raise IpnpError(f"{where}: missing key '{key}'")
        labels = self.dataset_json["labels"]
        if not isinstance(labels, dict) or labels.get("background") != 0:
            raise IpnpError(f"{where}: 'labels' must map names to ids with background 0")
        for name, value in labels.items():
            if isinstance(value, (list, tuple)):
                raise IpnpError(f"{where}: label '{name}' is a region; region-based labels are not supported")
            if not isinstance(value, int) or not 0 <= value <= 255:
                raise IpnpError(f"{where}: label '{name}' has id {value!r}; ids must be integers in 0..255")
        if len(set(labels.values())) != len(labels):
            raise IpnpError(f"{where}: two labels share an id")
        # nnU-Net's network has one output channel per id, so a gap would index past the last channel.
        gaps = sorted(set(range(max(labels.values()) + 1)) - set(labels.values()))
        if gaps:
            raise IpnpError(
                f"{where}: label ids must be consecutive from 0, as nnU-Net requires; ids {gaps} are missing "
                "(renumber the labels, in dataset.json and in every label map)"
            )

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @cached_property
    def organ_names(self) -> dict[int, str]:
        """Organ id -> name, background excluded, in id order."""
        return {i: n for n, i in sorted(self.dataset_json["labels"].items(), key=lambda kv: kv[1]) if i != 0}

    @property
    def organ_ids(self) -> tuple[int, ...]:
        return tuple(self.organ_names)

    @property
    def is_partial(self) -> bool:
        return self.manifest is not None and any(
            self.manifest.get(c, frozenset(self.organ_ids)) != frozenset(self.organ_ids) for c in self.training_ids
        )

    def _identifiers(self, folder: str) -> list[str]:
        """Case ids from image files named ``<case>_<4-digit channel><file_ending>``."""
        path = self.root / folder
        if not path.is_dir():
            return []
        ending = self.file_ending
        ids = set()
        for name in os.listdir(path):
            if name.endswith(ending) and not name.startswith("."):
                stem = name[: -len(ending)]
                if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
                    ids.add(stem[:-5])
        return sorted(ids)

    @cached_property
    def training_ids(self) -> list[str]:
        return self._identifiers(IMAGES_TR)

    @cached_property
    def test_ids(self) -> list[str]:
        return self._identifiers(IMAGES_TS)

    def labeled_organs(self, case_id: str) -> frozenset[int]:
        """Organs annotated in a case (all organs when the manifest does not list it)."""
        if self.manifest is None or case_id not in self.manifest:
            return frozenset(self.organ_ids)
        return self.manifest[case_id] & frozenset(self.organ_ids)

    def unknown_organs(self, case_id: str) -> frozenset[int]:
        return frozenset(self.organ_ids) - self.labeled_organs(case_id)

    def image_paths(self, case_id: str, split: str = "train") -> tuple[Path, ...]:
        folder = self.root / (IMAGES_TR if split == "train" else IMAGES_TS)
        return tuple(folder / f"{case_id}_{c:04d}{self.file_ending}" for c in range(self.num_channels))

    def case(self, case_id: str, split: str = "train") -> Case:
        """A lazily loaded case of the training (``"train"``) or test (``"test"``) split."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        ids = self.training_ids if split == "train" else self.test_ids
        if case_id not in ids:
            raise IpnpError(f"{self.root}: no {split} case '{case_id}'")
        label_dir = self.root / (LABELS_TR if split == "train" else LABELS_TS)
        label = label_dir / f"{case_id}{self.file_ending}"
        full = self.root / LABELS_TR_FULL / f"{case_id}{self.file_ending}"
        labeled = self.labeled_organs(case_id) if label.is_file() or split == "train" else frozenset()
        return Case(
            case_id=case_id,
            image_paths=self.image_paths(case_id, split),
            label_path=label if label.is_file() else None,
            labeled=labeled,
            unknown=frozenset(self.organ_ids) - labeled,
            full_label_path=full if split == "train" and full.is_file() else None,
        )

    def cases(self, split: str = "train") -> list[Case]:
        return [self.case(c, split) for c in (self.training_ids if split == "train" else self.test_ids)]


def write_dataset_json(
    root: str | os.PathLike,
    organ_names: dict[int, str],
    num_training: int,
    *,
    channel_names: dict[str, str] | None = None,
    file_ending: str = ".nii.gz",
    **extra: object,
) -> None:
    """Write an nnU-Net v2 ``dataset.json`` for an organ-id -> name mapping."""
    labels = {"background": 0, **{name: int(i) for i, name in sorted(organ_names.items())}}
    data = {
        "channel_names": channel_names or {"0": "CT"},
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }
    write_json(data, Path(root) / DATASET_JSON)


def write_manifest(root: str | os.PathLike, labeled: dict[str, frozenset[int] | set[int] | list[int]]) -> None:
    """Write ``partial_labels.json``: each training case's annotated organ ids, sorted."""
    write_json({c: sorted(int(i) for i in ids) for c, ids in sorted(labeled.items())}, Path(root) / MANIFEST)
