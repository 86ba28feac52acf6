import json

import numpy as np
import pytest

from conftest import ORGANS, SPACING, make_dataset
from ipnp.data import PartialDataset
from ipnp.data.dataset import write_dataset_json, write_manifest
from ipnp.data.io import atomic_path, read_image, staged_dir, write_image, Geometry
from ipnp.errors import IpnpError


def test_cases_and_names(dataset):
    ds = PartialDataset(dataset)
    assert ds.training_ids == ["case_000", "case_001", "case_002", "case_003"]
    assert ds.test_ids == ["case_004", "case_005"]
    assert ds.organ_names == ORGANS
    assert not ds.is_partial


def test_without_manifest_every_case_is_fully_labeled(dataset):
    ds = PartialDataset(dataset)
    assert ds.labeled_organs("case_000") == {1, 2, 3}
    assert ds.unknown_organs("case_000") == frozenset()


def test_manifest_by_id_and_name(tmp_path):
    root = make_dataset(tmp_path / "ds", manifest={"case_000": [1], "case_001": ["spleen", 3], "case_004": [2]})
    ds = PartialDataset(root)
    assert ds.is_partial
    assert ds.unknown_organs("case_000") == {2, 3}
    assert ds.labeled_organs("case_001") == {2, 3}
    assert ds.labeled_organs("case_002") == {1, 2, 3}  # not listed: fully labeled
    assert ds.case("case_004", "test").unknown == {1, 3}  # test references may be partial too


def test_case_loads_lazily_with_geometry(dataset):
    case = PartialDataset(dataset).case("case_001")
    assert case.shape == (8, 12, 14)
    assert case.geometry.spacing == pytest.approx(SPACING)
    image, geometry = case.load_image()
    label, _ = case.load_label()
    assert image.shape == (1, 8, 12, 14) and image.dtype == np.float32
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1, 2, 3}
    assert geometry.spacing_zyx == pytest.approx(SPACING[::-1])
    with pytest.raises(IpnpError, match="labelsTr_full"):
        case.load_full_label()


@pytest.mark.parametrize(
    "labels, message",
    [
        ({"background": 0, "a": [1, 2]}, "region"),
        ({"bg": 0, "a": 1}, "background 0"),
        ({"background": 0, "a": 1, "b": 1}, "share an id"),
        ({"background": 0, "a": 300}, "0..255"),
    ],
)
def test_bad_dataset_json(dataset, labels, message):
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["labels"] = labels
    (dataset / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(IpnpError, match=message):
        PartialDataset(dataset)


def test_manifest_with_unknown_name_is_rejected(tmp_path):
    root = make_dataset(tmp_path / "ds", manifest={"case_000": ["heart"]})
    with pytest.raises(IpnpError, match="case_000: unknown organ 'heart'"):
        PartialDataset(root)


def test_missing_folder_and_json(tmp_path):
    with pytest.raises(IpnpError, match="not found"):
        PartialDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IpnpError, match="dataset.json: file not found"):
        PartialDataset(tmp_path / "empty")


def test_writers_round_trip(tmp_path):
    write_dataset_json(tmp_path, {2: "b", 1: "a"}, num_training=3)
    write_manifest(tmp_path, {"x": {2, 1}})
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "a": 1, "b": 2} and meta["numTraining"] == 3
    assert json.loads((tmp_path / "partial_labels.json").read_text()) == {"x": [1, 2]}
    geometry = Geometry((2.0, 1.0, 4.0), (1.0, -2.0, 3.0), (1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    write_image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), geometry, tmp_path / "v.nii.gz")
    array, back = read_image(tmp_path / "v.nii.gz")
    assert back.mismatch(geometry) is None and array[1, 2, 3] == 23
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "partial_labels.json", "v.nii.gz"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    (tmp_path / "f.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert (tmp_path / "f.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_staged_dir_is_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(out) as tmp:
            (tmp / "a").write_text("x")
            raise RuntimeError("killed")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with staged_dir(out) as tmp:
        (tmp / "a").write_text("x")
    assert (out / "a").read_text() == "x"
    with pytest.raises(IpnpError, match="already exists"):
        with staged_dir(out):
            pass
    with staged_dir(out, overwrite=True) as tmp:
        (tmp / "b").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["b"]


def test_staged_dir_refuses_to_write_into_its_input(tmp_path):
    with pytest.raises(IpnpError, match="inside"):
        with staged_dir(tmp_path / "in" / "out", inputs=(tmp_path / "in",)):
            pass
    with pytest.raises(IpnpError, match="must not be an input folder"):
        with staged_dir(tmp_path, overwrite=True, inputs=(tmp_path,)):
            pass
