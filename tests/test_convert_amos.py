"""AMOS22 conversion on a tiny fake release tree."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ipnp.cli import main
from ipnp.data.convert.amos import convert_amos
from ipnp.data.dataset import PartialDataset
from ipnp.data.labels import AMOS_ORGANS
from ipnp.errors import IpnpError

SHAPE = (8, 10, 12)  # (z, y, x)
TRAIN, MRI, VAL = ("amos_0001", "amos_0002"), "amos_0508", "amos_0005"
AMOS_LABEL_NAMES = {"0": "background", **{str(i): n for i, n in AMOS_ORGANS.items()}, "4": "gall bladder"}


def write_case(root: Path, images: str, labels: str, case: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(-1024, 1500, SHAPE).astype(np.int16))
    label = sitk.GetImageFromArray(rng.choice(np.array([0, 1, 6, 15], dtype=np.uint8), SHAPE))
    for im in (image, label):
        im.SetSpacing((0.7 + seed / 10, 0.8, 5.0))
        im.SetOrigin((-120.5, 33.0, -400.0 + seed))
        im.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / labels).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(root / images / f"{case}.nii.gz"))
    sitk.WriteImage(label, str(root / labels / f"{case}.nii.gz"))


def entry(folder: str, case: str) -> dict[str, str]:
    return {"image": f"./images{folder}/{case}.nii.gz", "label": f"./labels{folder}/{case}.nii.gz"}


@pytest.fixture
def amos(tmp_path) -> Path:
    root = tmp_path / "amos22"
    for seed, case in enumerate(TRAIN + (MRI,)):
        write_case(root, "imagesTr", "labelsTr", case, seed)
    write_case(root, "imagesVa", "labelsVa", VAL, 7)
    (root / "imagesTs").mkdir()
    meta = {
        "name": "AMOS",
        "modality": {"0": "CT"},
        "labels": AMOS_LABEL_NAMES,
        "numTraining": 3,
        "training": [entry("Tr", c) for c in TRAIN + (MRI,)],
        "validation": [entry("Va", VAL)],
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def sha256_tree(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_same_image(a: Path, b: Path) -> None:
    ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert np.array_equal(sitk.GetArrayFromImage(ia), sitk.GetArrayFromImage(ib))
    assert ia.GetPixelID() == ib.GetPixelID()
    assert (ia.GetSpacing(), ia.GetOrigin(), ia.GetDirection()) == (ib.GetSpacing(), ib.GetOrigin(), ib.GetDirection())


def test_converts_ct_cases_and_skips_mri(amos, tmp_path, caplog):
    before = sha256_tree(amos)
    with caplog.at_level(logging.INFO):
        out = convert_amos(amos, tmp_path / "out")
    assert sha256_tree(amos) == before

    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in TRAIN]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in TRAIN]
    assert [p.name for p in (out / "imagesTs").iterdir()] == [f"{VAL}_0000.nii.gz"]
    assert [p.name for p in (out / "labelsTs").iterdir()] == [f"{VAL}.nii.gz"]
    assert not (out / "partial_labels.json").exists()
    for case in TRAIN:
        assert_same_image(amos / f"imagesTr/{case}.nii.gz", out / f"imagesTr/{case}_0000.nii.gz")
        assert_same_image(amos / f"labelsTr/{case}.nii.gz", out / f"labelsTr/{case}.nii.gz")
    assert_same_image(amos / f"imagesVa/{VAL}.nii.gz", out / f"imagesTs/{VAL}_0000.nii.gz")
    assert_same_image(amos / f"labelsVa/{VAL}.nii.gz", out / f"labelsTs/{VAL}.nii.gz")

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, **{n: i for i, n in AMOS_ORGANS.items()}}
    assert meta["numTraining"] == 2 and meta["channel_names"] == {"0": "CT"}
    ds = PartialDataset(out)
    assert ds.training_ids == list(TRAIN) and ds.test_ids == [VAL]
    assert not ds.is_partial and ds.unknown_organs(TRAIN[0]) == frozenset()
    assert ds.case(TRAIN[0]).load_label()[0].shape == SHAPE
    assert any("3 CT cases" in r.getMessage() and "1 MRI" in r.getMessage() for r in caplog.records)


def test_cli_converts(amos, tmp_path):
    assert main(["convert", "amos", str(amos), str(tmp_path / "out")]) == 0
    assert PartialDataset(tmp_path / "out").training_ids == list(TRAIN)


def test_missing_listed_file_is_a_one_line_error(amos, tmp_path, capsys):
    missing = amos / "labelsVa" / f"{VAL}.nii.gz"
    missing.unlink()
    assert main(["convert", "amos", str(amos), str(tmp_path / "out")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ipnp: error: ")]
    assert len(errors) == 1 and str(missing) in errors[0]
    assert not (tmp_path / "out").exists()


def test_missing_mri_file_does_not_matter(amos, tmp_path):
    (amos / "imagesTr" / f"{MRI}.nii.gz").unlink()
    assert PartialDataset(convert_amos(amos, tmp_path / "out")).training_ids == list(TRAIN)


def test_label_that_does_not_match_its_image_is_an_error(amos, tmp_path):
    label = amos / "labelsTr" / f"{TRAIN[1]}.nii.gz"
    sitk.WriteImage(sitk.Image(12, 10, 9, sitk.sitkUInt8), str(label))
    with pytest.raises(IpnpError, match=rf"{label}: shape \(9, 10, 12\) differs"):
        convert_amos(amos, tmp_path / "out")


def test_unexpected_label_ids_are_an_error(amos, tmp_path):
    meta = json.loads((amos / "dataset.json").read_text())
    meta["labels"]["16"] = "kidney cyst"
    (amos / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(IpnpError, match="label ids"):
        convert_amos(amos, tmp_path / "out")
