import csv
import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from conftest import SPACING, write_volume
from ipnp.errors import IpnpError
from ipnp.evaluation import dice, evaluate_folders, hd95, score_case
from ipnp.cli import main

SPACING_ZYX = tuple(reversed(SPACING))  # (3.0, 1.2, 1.5) mm
SHAPE = (8, 12, 14)
ORGAN_NAMES = {1: "liver", 2: "spleen", 3: "kidney"}


def surface_points_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it (outside the array counts), in mm."""
    padded = np.pad(mask, 1)
    core = (slice(1, -1),) * mask.ndim
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (1, -1):
            interior &= np.roll(padded, shift, axis)[core]
    return np.argwhere(mask & ~interior) * np.asarray(spacing)


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing, pooled: bool = True) -> float:
    """HD95 from all pairwise surface distances: pooled over both directions (medpy's definition), or
    the larger of the two directed 95th percentiles (MONAI's ``compute_hausdorff_distance``)."""
    d = cdist(surface_points_mm(a, spacing), surface_points_mm(b, spacing))
    a_to_b, b_to_a = d.min(axis=1), d.min(axis=0)
    if pooled:
        return float(np.percentile(np.concatenate([a_to_b, b_to_a]), 95))
    return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def box(shape, start, size) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return mask


def test_dice_of_offset_cubes_by_hand():
    a = box((10, 10, 10), (2, 2, 2), (4, 4, 4))
    b = box((10, 10, 10), (2, 2, 3), (4, 4, 4))  # one voxel along x: 48 of 64 voxels overlap
    assert dice(a, b) == pytest.approx(2 * 48 / 128)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0


def test_hd95_of_offset_plates_by_hand():
    # One-voxel-thick plates: every surface voxel faces its twin straight across, so every distance,
    # and HD95, is the offset times the spacing along that axis.
    shape, spacing = (10, 10, 10), (2.5, 0.8, 0.7)
    plate = box(shape, (3, 2, 2), (1, 6, 6))
    assert hd95(plate, np.roll(plate, 2, axis=0), spacing) == pytest.approx(2 * 2.5)
    plate_x = box(shape, (2, 2, 3), (6, 6, 1))
    assert hd95(plate_x, np.roll(plate_x, 2, axis=2), spacing) == pytest.approx(2 * 0.7)


def test_hd95_is_a_percentile_not_the_maximum():
    # A single stray voxel adds one large distance among 2 x 98 surface distances of 0: the 95th
    # percentile stays 0 while the Hausdorff distance (maximum) would be the stray's distance.
    ref = box((12, 12, 12), (1, 1, 1), (5, 5, 5))
    pred = ref.copy()
    pred[10, 10, 10] = True
    assert hd95(pred, ref, (1.0, 1.0, 1.0)) == 0.0
    assert brute_force_hd95(pred, ref, (1.0, 1.0, 1.0)) == 0.0


def test_hd95_matches_brute_force_pooled_definition():
    rng = np.random.default_rng(0)
    shape, spacing = (14, 16, 18), (3.0, 0.9, 1.4)
    big = box(shape, (2, 2, 2), (9, 10, 12))
    small = box(shape, (3, 4, 9), (3, 4, 4))
    # Smoothed noise gives irregular blobs, touching the volume's border too.
    blobs = [np.convolve(rng.random(np.prod(shape)), np.ones(40), "same").reshape(shape) for _ in range(2)]
    pairs = [(big, small), (small, big), (blobs[0] > 20.5, blobs[1] > 20.5), (big, np.roll(big, (1, -2, 3), (0, 1, 2)))]
    for a, b in pairs:
        assert hd95(a, b, spacing) == pytest.approx(brute_force_hd95(a, b, spacing), rel=1e-5)
    # The pair of nested boxes tells the two common HD95 definitions apart, so this test can see which is used.
    assert brute_force_hd95(big, small, spacing) != pytest.approx(brute_force_hd95(big, small, spacing, pooled=False))


def test_empty_mask_conventions():
    empty = np.zeros(SHAPE, bool)
    organ = box(SHAPE, (1, 1, 1), (3, 3, 3))
    diagonal = float(np.linalg.norm(np.multiply(SHAPE, SPACING_ZYX)))  # 34.99 mm
    assert (dice(empty, empty), hd95(empty, empty, SPACING_ZYX)) == (1.0, 0.0)
    assert (dice(organ, empty), hd95(organ, empty, SPACING_ZYX)) == (0.0, pytest.approx(diagonal))
    assert (dice(empty, organ), hd95(empty, organ, SPACING_ZYX)) == (0.0, pytest.approx(diagonal))
    pred = organ.astype(np.uint8)
    assert score_case(pred, np.zeros(SHAPE, np.uint8), SPACING_ZYX, [1, 2]) == {1: (0.0, pytest.approx(diagonal)), 2: (1.0, 0.0)}


def test_score_case_crops_without_changing_scores():
    rng = np.random.default_rng(3)
    ref = np.zeros((30, 40, 50), np.uint8)
    ref[0:6, 5:15, 0:12] = 1  # touches the volume's border
    ref[20:28, 25:38, 30:47] = 2
    pred = np.where(rng.random(ref.shape) < 0.03, 2, np.roll(ref, (1, 2), (0, 2))).astype(np.uint8)
    scores = score_case(pred, ref, SPACING_ZYX, [2, 1])
    assert list(scores) == [2, 1]
    for organ, (d, h) in scores.items():
        assert d == pytest.approx(dice(pred == organ, ref == organ))
        assert h == pytest.approx(brute_force_hd95(pred == organ, ref == organ, SPACING_ZYX), rel=1e-5)


def write_case(folder, case, label, spacing=SPACING):
    write_volume(label.astype(np.uint8), folder / f"{case}.nii.gz", spacing=spacing)


@pytest.fixture
def scored(tmp_path):
    """References in ``ds/labelsTs`` (dataset.json beside), predictions, and a manifest.

    case_000 is fully labeled: liver exact, spleen one voxel off along x, a kidney predicted where there
    is none. case_001 labels liver and kidney only: its liver is one voxel off, and the spleen it predicts
    cannot be judged, since the reference does not contour the spleen.
    """
    gt, pred = tmp_path / "ds" / "labelsTs", tmp_path / "pred"
    (tmp_path / "ds").mkdir()
    labels = {"background": 0, **{name: i for i, name in ORGAN_NAMES.items()}}
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    liver, spleen = box(SHAPE, (1, 1, 1), (3, 4, 4)), box(SHAPE, (4, 6, 7), (3, 4, 4))
    kidney = box(SHAPE, (6, 1, 10), (2, 2, 2))
    shift = lambda m: np.roll(m, 1, axis=2)  # noqa: E731
    write_case(gt, "case_000", liver * 1 + spleen * 2)
    write_case(pred, "case_000", liver * 1 + shift(spleen) * 2 + kidney * 3)
    write_case(gt, "case_001", liver * 1)
    write_case(pred, "case_001", shift(liver) * 1 + spleen * 2)
    manifest = tmp_path / "partial_labels.json"
    manifest.write_text(json.dumps({"case_001": ["liver", 3], "case_999": [2]}))
    return pred, gt, manifest, dict(liver=liver, spleen=spleen, kidney=kidney, shift=shift)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_folders_writes_csv_and_summary(tmp_path, scored):
    pred, gt, manifest, m = scored
    out = tmp_path / "eval"
    summary = evaluate_folders(pred, gt, out, manifest=manifest)

    rows = read_rows(out / "per_case.csv")
    assert list(rows[0]) == ["case", "organ_id", "organ", "dsc", "hd95_mm", "ref_voxels", "pred_voxels"]
    got = {(r["case"], r["organ"]): (float(r["dsc"]), float(r["hd95_mm"]), int(r["ref_voxels"]), int(r["pred_voxels"])) for r in rows}
    diagonal = float(np.linalg.norm(np.multiply(SHAPE, SPACING_ZYX)))
    shifted_hd = brute_force_hd95(m["shift"](m["spleen"]), m["spleen"], SPACING_ZYX)
    expected = {
        ("case_000", "liver"): (1.0, 0.0, 48, 48),
        ("case_000", "spleen"): (0.75, shifted_hd, 48, 48),
        ("case_000", "kidney"): (0.0, diagonal, 0, 8),
        ("case_001", "liver"): (0.75, shifted_hd, 48, 48),
        ("case_001", "kidney"): (1.0, 0.0, 0, 0),
    }
    # The spleen predicted in case_001 is not scored: its reference does not label the spleen.
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert got[key] == pytest.approx(values, abs=1e-4), key

    organs = summary["organs"]
    assert organs["liver"] == pytest.approx({"id": 1, "dsc": 0.875, "hd95": shifted_hd / 2, "n": 2}, abs=1e-4)
    assert organs["spleen"] == pytest.approx({"id": 2, "dsc": 0.75, "hd95": shifted_hd, "n": 1}, abs=1e-4)
    assert organs["kidney"] == pytest.approx({"id": 3, "dsc": 0.5, "hd95": diagonal / 2, "n": 2}, abs=1e-4)
    # The mean of the organ means (0.7083), not of the five (case, organ) pairs (0.7).
    assert summary["mean_dsc"] == pytest.approx((0.875 + 0.75 + 0.5) / 3, abs=1e-4)
    assert summary["mean_hd95"] == pytest.approx((shifted_hd / 2 + shifted_hd + diagonal / 2) / 3, abs=1e-4)
    assert summary["cases"] == 2
    assert json.loads((out / "summary.json").read_text()) == summary
    markdown = (out / "summary.md").read_text()
    assert "| 2 | spleen | 0.7500 |" in markdown and "| 1 | liver | 0.8750 |" in markdown
    assert f"| | **Average** | **{summary['mean_dsc']:.4f}** |" in markdown
    assert sorted(p.name for p in out.iterdir()) == ["per_case.csv", "summary.json", "summary.md"]


def test_without_manifest_every_organ_is_scored(tmp_path, scored):
    pred, gt, _, _ = scored
    summary = evaluate_folders(pred, gt, tmp_path / "eval")
    # Now the spleen predicted in case_001 counts as a false positive.
    assert summary["organs"]["spleen"]["n"] == 2
    assert summary["organs"]["spleen"]["dsc"] == pytest.approx((0.75 + 0.0) / 2)


def test_organs_default_to_the_ids_present(tmp_path, scored):
    pred, gt, _, _ = scored
    (gt.parent / "dataset.json").unlink()
    evaluate_folders(pred, gt, tmp_path / "eval")
    rows = read_rows(tmp_path / "eval" / "per_case.csv")
    assert sorted({(r["organ_id"], r["organ"]) for r in rows}) == [("1", "1"), ("2", "2"), ("3", "3")]
    # case_001 holds no kidney in either map: scored as both empty.
    kidney = [r for r in rows if r["case"] == "case_001" and r["organ"] == "3"]
    assert [(float(r["dsc"]), float(r["hd95_mm"])) for r in kidney] == [(1.0, 0.0)]


def test_command_prints_the_table(tmp_path, scored, capsys):
    pred, gt, manifest, _ = scored
    assert main(["evaluate", str(pred), str(gt), "--out", str(tmp_path / "eval"), "--manifest", str(manifest)]) == 0
    printed = capsys.readouterr().out
    assert "| 3 | kidney | 0.5000 |" in printed and "**Average**" in printed and "wrote per_case.csv" in printed


def test_missing_prediction_is_one_line(tmp_path, scored):
    pred, gt, _, _ = scored
    (pred / "case_001.nii.gz").unlink()
    with pytest.raises(IpnpError, match="case_001") as err:
        evaluate_folders(pred, gt, tmp_path / "eval")
    assert "\n" not in str(err.value) and not (tmp_path / "eval").exists()


def test_geometry_mismatch_names_the_file(tmp_path, scored):
    pred, gt, _, _ = scored
    write_case(pred, "case_001", np.zeros(SHAPE), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(IpnpError, match=r"case_001\.nii\.gz: spacing") as err:
        evaluate_folders(pred, gt, tmp_path / "eval")
    assert "\n" not in str(err.value)
    write_case(pred, "case_001", np.zeros((8, 12, 15)))
    with pytest.raises(IpnpError, match=r"case_001\.nii\.gz: shape"):
        evaluate_folders(pred, gt, tmp_path / "eval")


def test_bad_manifest_and_output_inside_input(tmp_path, scored):
    pred, gt, manifest, _ = scored
    manifest.write_text(json.dumps({"case_001": ["pancreas"]}))
    with pytest.raises(IpnpError, match="unknown organ 'pancreas'"):
        evaluate_folders(pred, gt, tmp_path / "eval", manifest=manifest)
    with pytest.raises(IpnpError, match="must not be an input folder"):
        evaluate_folders(pred, gt, pred / "eval")
