"""A corpus of broken datasets: each must give one clear line naming the file or case, and change nothing."""

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_dataset, tree_digest, write_volume
from ipnp.cli import main
from ipnp.data.validate import Severity, require_valid, validate_dataset
from ipnp.errors import IpnpError

TR = Path("imagesTr")
LB = Path("labelsTr")


def _rewrite_label(root, case, fn):
    path = root / LB / f"{case}.nii.gz"
    image = sitk.ReadImage(str(path))
    array = fn(sitk.GetArrayFromImage(image))
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image) if out.GetSize() == image.GetSize() else out.SetSpacing(image.GetSpacing())
    sitk.WriteImage(out, str(path))


def _rewrite_image(root, case, fn, **geometry):
    path = root / TR / f"{case}_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    out = sitk.GetImageFromArray(fn(sitk.GetArrayFromImage(image)))
    out.CopyInformation(image)
    for key, value in geometry.items():
        getattr(out, f"Set{key}")(value)
    sitk.WriteImage(out, str(path))


def _json(root, name, fn):
    path = root / name
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(fn(data)))


CORRUPTIONS = {
    "shape mismatch": (lambda r: _rewrite_label(r, "case_001", lambda a: a[:, :, :-1]), "labelsTr/case_001.nii.gz", "shape"),
    "spacing mismatch": (lambda r: _rewrite_image(r, "case_001", lambda a: a, Spacing=(2.0, 1.2, 3.0)), "labelsTr/case_001.nii.gz", "spacing"),
    "origin mismatch": (lambda r: _rewrite_image(r, "case_002", lambda a: a, Origin=(5.0, 0.0, 0.0)), "labelsTr/case_002.nii.gz", "origin"),
    "direction mismatch": (
        lambda r: _rewrite_image(r, "case_002", lambda a: a, Direction=(-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)),
        "labelsTr/case_002.nii.gz",
        "direction",
    ),
    "undeclared label id": (lambda r: _rewrite_label(r, "case_000", lambda a: np.where(a == 1, 7, a).astype(np.uint8)), "labelsTr/case_000.nii.gz", r"\[7\] are not declared"),
    "float labels": (lambda r: _rewrite_label(r, "case_000", lambda a: a.astype(np.float32) * 0.5), "labelsTr/case_000.nii.gz", "non-integer"),
    "nan image": (lambda r: _rewrite_image(r, "case_003", lambda a: np.where(a > 30, np.nan, a.astype(np.float32))), "imagesTr/case_003_0000.nii.gz", "NaN"),
    "inf image": (lambda r: _rewrite_image(r, "case_003", lambda a: np.where(a > 30, np.inf, a.astype(np.float32))), "imagesTr/case_003_0000.nii.gz", "infinite"),
    "all-zero image": (lambda r: _rewrite_image(r, "case_003", lambda a: np.zeros_like(a)), "imagesTr/case_003_0000.nii.gz", "constant"),
    "truncated image": (
        lambda r: (r / TR / "case_000_0000.nii.gz").write_bytes((r / TR / "case_000_0000.nii.gz").read_bytes()[:200]),
        "imagesTr/case_000_0000.nii.gz",
        "cannot read",
    ),
    "not a nifti": (lambda r: (r / LB / "case_000.nii.gz").write_bytes(gzip.compress(b"hello")), "labelsTr/case_000.nii.gz", "cannot read"),
    "missing label": (lambda r: (r / LB / "case_002.nii.gz").unlink(), "labelsTr/case_002.nii.gz", "label file is missing"),
    "missing channel 0000": (
        lambda r: (r / TR / "case_001_0000.nii.gz").rename(r / TR / "case_001_0001.nii.gz"),
        "imagesTr/case_001_0001.nii.gz",
        "channel 0001 is not declared",
    ),
    "extra channel": (
        lambda r: shutil.copy(r / TR / "case_001_0000.nii.gz", r / TR / "case_001_0001.nii.gz"),
        "imagesTr/case_001_0001.nii.gz",
        "not declared",
    ),
    "label without image": (lambda r: shutil.copy(r / LB / "case_001.nii.gz", r / LB / "case_009.nii.gz"), "labelsTr/case_009.nii.gz", "no image"),
    "manifest unknown case": (lambda r: _json(r, "partial_labels.json", lambda d: {"case_999": [1]}), "partial_labels.json", "case case_999 has no image"),
    "manifest unknown class id": (lambda r: _json(r, "partial_labels.json", lambda d: {"case_000": [1, 9]}), "partial_labels.json", r"organ ids \[9\]"),
    "manifest unknown class name": (lambda r: _json(r, "partial_labels.json", lambda d: {"case_000": ["heart"]}), "partial_labels.json", "unknown organ 'heart'"),
    "manifest not a mapping": (lambda r: _json(r, "partial_labels.json", lambda d: [1, 2]), "partial_labels.json", "expected an object"),
    "mask holds an unlisted organ": (lambda r: _json(r, "partial_labels.json", lambda d: {"case_000": [1, 2]}), "partial_labels.json", "case_000: mask contains kidney"),
    "organ labeled in no case": (
        lambda r: _json(r, "partial_labels.json", lambda d: {f"case_{i:03d}": [1, 2] for i in range(4)})
        or [_rewrite_label(r, f"case_{i:03d}", lambda a: np.where(a == 3, 0, a).astype(np.uint8)) for i in range(4)],
        "labelsTr",
        r"kidney \(id 3\) is labeled in no training case",
    ),
    "broken dataset.json": (lambda r: (r / "dataset.json").write_text("{"), "dataset.json", "not valid JSON"),
    "label ids with a gap": (
        lambda r: _json(r, "dataset.json", lambda d: {**d, "labels": {"background": 0, "liver": 1, "spleen": 2, "kidney": 5}})
        or [_rewrite_label(r, f"case_{i:03d}", lambda a: np.where(a == 3, 5, a).astype(np.uint8)) for i in range(4)],
        "dataset.json",
        r"consecutive.*\[3, 4\] are missing",
    ),
    "test label mismatch": (
        lambda r: write_volume(np.zeros((8, 12, 13), np.uint8), r / "labelsTs" / "case_004.nii.gz"),
        "labelsTs/case_004.nii.gz",
        "shape",
    ),
}


def test_clean_dataset_passes(dataset, capsys):
    assert validate_dataset(dataset) == []
    assert main(["validate", str(dataset)]) == 0


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_bad_input_is_named_in_one_line(tmp_path, kind, capsys):
    corrupt, where, message = CORRUPTIONS[kind]
    root = make_dataset(tmp_path / "ds")
    corrupt(root)
    before = tree_digest(root)

    errors = [p for p in validate_dataset(root) if p.severity is Severity.ERROR]
    assert any(where in p.where.replace(os.sep, "/") for p in errors), errors
    assert any(__import__("re").search(message, p.message) for p in errors), errors

    assert main(["validate", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert all(line.startswith(("error: ", "warning: ")) for line in out.splitlines())

    # A command that consumes the dataset refuses it with exactly one line on stderr.
    assert main(["partial", str(root), str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    error_lines = [ln for ln in err.splitlines() if ln.startswith("ipnp: error:")]
    assert len(error_lines) == 1 and where.split("/")[-1] in error_lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert tree_digest(root) == before


def test_debug_flag_shows_traceback(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    (root / "dataset.json").write_text("{")
    assert main(["--debug", "partial", str(root), str(tmp_path / "out")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_organ_listed_but_absent_is_a_warning(tmp_path):
    root = make_dataset(tmp_path / "ds", manifest={"case_000": [1, 2, 3]})
    _rewrite_label(root, "case_000", lambda a: np.where(a == 3, 0, a).astype(np.uint8))
    problems = validate_dataset(root)
    assert [p.severity for p in problems] == [Severity.WARNING]
    assert "case_000: kidney is listed as labeled but absent" in problems[0].message
    assert require_valid(root).training_ids  # warnings do not stop work


def test_require_valid_counts_further_problems(tmp_path):
    root = make_dataset(tmp_path / "ds")
    for case in ("case_000", "case_001"):
        (root / LB / f"{case}.nii.gz").unlink()
    with pytest.raises(IpnpError, match=r"and 1 more problem"):
        require_valid(root)


def test_a_replacement_labels_folder_is_checked_against_the_images(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    labels = tmp_path / "merged"
    shutil.copytree(root / "labelsTr", labels)
    write_volume(np.zeros((8, 12, 13), np.uint8), labels / "case_002.nii.gz")
    (labels / "case_003.nii.gz").unlink()
    assert main(["train", str(root), "--out", str(tmp_path / "run"), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "merged/case_002.nii.gz: label shape" in err and "and 1 more problem" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
