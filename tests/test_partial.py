import json

import numpy as np
import pytest

from conftest import make_dataset, tree_digest
from ipnp.cli import main
from ipnp.data import PartialDataset
from ipnp.data.partial import choose_labeled_organs, n_kept, simulate_partial_labels
from ipnp.data.validate import validate_dataset
from ipnp.errors import IpnpError


@pytest.mark.parametrize("keep, n, expected", [(0.67, 15, 10), (0.33, 15, 5), (0.67, 3, 2), (0.33, 3, 1), (0.1, 2, 1), (1.0, 4, 4), (0.5, 3, 2)])
def test_number_kept_is_rounded_and_at_least_one(keep, n, expected):
    assert n_kept(keep, n) == expected


def test_choice_is_deterministic_and_within_present():
    present = {f"c{i}": set(range(1, 16)) - {i % 15 + 1} for i in range(30)}
    a = choose_labeled_organs(present, 0.33, seed=4)
    assert a == choose_labeled_organs(present, 0.33, seed=4)
    assert a != choose_labeled_organs(present, 0.33, seed=5)
    for case, organs in a.items():
        assert organs <= present[case] and len(organs) == 5


def test_simulate_writes_partial_dataset(tmp_path, capsys):
    src = make_dataset(tmp_path / "src", n_train=6, n_test=2, seed=1)
    before = tree_digest(src)
    out = tmp_path / "partial"
    assert main(["partial", str(src), str(out), "--keep", "0.67", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert tree_digest(src) == before

    ds = PartialDataset(out)
    assert ds.is_partial and validate_dataset(out) == []
    manifest = json.loads((out / "partial_labels.json").read_text())
    assert sorted(manifest) == ds.training_ids
    counts = {i: 0 for i in ds.organ_ids}
    for case in ds.cases("train"):
        partial, _ = case.load_label()
        full, _ = case.load_full_label()
        original, _ = PartialDataset(src).case(case.case_id).load_label()
        assert np.array_equal(full, original)
        assert len(case.labeled) == 2  # round(0.67 * 3)
        kept = np.isin(full, sorted(case.labeled))
        assert np.array_equal(partial[kept], full[kept]) and not partial[~kept].any()
        for organ in case.labeled:
            counts[organ] += 1
    for organ, n in counts.items():
        assert f"{ds.organ_names[organ]:<24} {n}" in printed
    # The test split is copied byte for byte.
    assert {k: v for k, v in tree_digest(out).items() if "Ts" in k} == {k: v for k, v in before.items() if "Ts" in k}


def test_same_seed_same_result(tmp_path):
    src = make_dataset(tmp_path / "src", n_train=8)
    simulate_partial_labels(src, tmp_path / "a", keep=0.33, seed=7)
    simulate_partial_labels(src, tmp_path / "b", keep=0.33, seed=7)
    simulate_partial_labels(src, tmp_path / "c", keep=0.33, seed=8)
    read = lambda name: (tmp_path / name / "partial_labels.json").read_text()
    assert read("a") == read("b")
    assert read("a") != read("c")


def test_refuses_when_an_organ_would_vanish(tmp_path, capsys):
    src = make_dataset(tmp_path / "src", n_train=1)
    assert main(["partial", str(src), str(tmp_path / "out"), "--keep", "0.33"]) == 2
    err = capsys.readouterr().err
    assert "would be labeled in no training case" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_refuses_partial_input_and_bad_keep(tmp_path):
    src = make_dataset(tmp_path / "src", n_train=3, manifest={"case_000": [1, 2, 3], "case_001": [1, 2], "case_002": [3]})
    for case, drop in (("case_001", 3), ("case_002", 1), ("case_002", 2)):
        import SimpleITK as sitk

        path = src / "labelsTr" / f"{case}.nii.gz"
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
        out = sitk.GetImageFromArray(np.where(array == drop, 0, array).astype(np.uint8))
        out.CopyInformation(image)
        sitk.WriteImage(out, str(path))
    with pytest.raises(IpnpError, match="already partially labeled"):
        simulate_partial_labels(src, tmp_path / "out")
    with pytest.raises(IpnpError, match="must lie in"):
        simulate_partial_labels(src, tmp_path / "out", keep=1.5)
