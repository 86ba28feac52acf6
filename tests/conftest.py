"""Shared fixtures: small datasets that the tests build themselves."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

# nnU-Net reads these when it is imported; tests never touch a user's nnU-Net folders.
_NNUNET_HOME = Path(tempfile.mkdtemp(prefix="ipnp-tests-nnunet-"))
atexit.register(shutil.rmtree, _NNUNET_HOME, ignore_errors=True)
for _var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ.setdefault(_var, str(_NNUNET_HOME / _var))
os.environ.setdefault("nnUNet_def_n_proc", "1")
os.environ.setdefault("nnUNet_n_proc_DA", "0")
os.environ.setdefault("nnUNet_compile", "f")

SPACING = (1.5, 1.2, 3.0)  # x, y, z in mm
ORGANS = {1: "liver", 2: "spleen", 3: "kidney"}


def write_volume(array: np.ndarray, path: Path, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def blob_label(rng: np.random.Generator, shape=(8, 12, 14), organs=(1, 2, 3)) -> np.ndarray:
    """A label map with one box per organ, at random non-overlapping positions along x."""
    label = np.zeros(shape, np.uint8)
    width = shape[2] // len(organs)
    for k, organ in enumerate(organs):
        z0 = rng.integers(0, shape[0] // 2)
        y0 = rng.integers(0, shape[1] // 2)
        label[z0 : z0 + 3, y0 : y0 + 4, k * width + 1 : (k + 1) * width - 1] = organ
    return label


def make_dataset(
    root: Path,
    n_train: int = 4,
    n_test: int = 2,
    shape=(8, 12, 14),
    organs: dict[int, str] = ORGANS,
    manifest: dict | None = None,
    seed: int = 0,
) -> Path:
    """A tiny, valid, fully labeled dataset in ipnp's convention."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    labels = {"background": 0, **{name: i for i, name in organs.items()}}
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": labels, "numTraining": n_train, "file_ending": ".nii.gz"})
    )
    for k in range(n_train + n_test):
        split = ("imagesTr", "labelsTr") if k < n_train else ("imagesTs", "labelsTs")
        label = blob_label(rng, shape, tuple(organs))
        image = (label * 40 + rng.normal(0, 5, shape)).astype(np.int16)
        write_volume(image, root / split[0] / f"case_{k:03d}_0000.nii.gz")
        write_volume(label, root / split[1] / f"case_{k:03d}.nii.gz")
    if manifest is not None:
        (root / "partial_labels.json").write_text(json.dumps(manifest))
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path: compare before and after a command."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")


@pytest.fixture
def simulated(tmp_path):
    """A partial dataset with complete labels beside it, as `ipnp partial` writes it."""
    from ipnp.data import PartialDataset
    from ipnp.data.partial import simulate_partial_labels

    src = make_dataset(tmp_path / "full", n_train=6, n_test=0, shape=(12, 16, 18), seed=3)
    simulate_partial_labels(src, tmp_path / "partial", keep=0.34, seed=0)
    return PartialDataset(tmp_path / "partial")


def full_labels_as_pseudo(partial: Path, labels: Path, keep: int | None = None) -> dict[str, list[int]]:
    """A labels folder for IPnP training: the full labels stand in for ground truth + accepted pseudo-labels,
    and each case's unknown organs (the first ``keep`` of them, or all) are marked as pseudo-labels."""
    import shutil

    from ipnp.data import PartialDataset

    ds = PartialDataset(partial)
    shutil.copytree(partial / "labelsTr_full", labels)
    pseudo = {c: sorted(ds.unknown_organs(c))[:keep] for c in ds.training_ids}
    (labels / "pseudo_labels.json").write_text(json.dumps(pseudo))
    return pseudo
