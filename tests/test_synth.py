"""Synthetic phantoms: anatomy, variation, determinism, the written dataset, and that intensity alone
cannot segment them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ipnp.cli import main
from ipnp.data.dataset import PartialDataset
from ipnp.data.io import Geometry, read_image
from ipnp.data.labels import AMOS_ORGANS
from ipnp.data.synth import DEFAULT_SHAPE, case_rng, make_phantom, synthesize_dataset
from ipnp.errors import IpnpError

ID = {name: i for i, name in AMOS_ORGANS.items()}
HU_EDGES = np.arange(-1100.0, 1101.0, 10.0)


@pytest.fixture(scope="module")
def phantoms() -> list[tuple[np.ndarray, np.ndarray, Geometry]]:
    """Eight default-size phantoms, shared by the tests that only read them."""
    return [make_phantom(case_rng(11, i)) for i in range(8)]


def voxels_mm(label: np.ndarray, organ: int, geometry: Geometry) -> np.ndarray:
    """Patient-frame (x, y, z) positions in mm of an organ's voxels."""
    zyx = np.argwhere(label == organ)
    return zyx[:, ::-1] * np.asarray(geometry.spacing) + np.asarray(geometry.origin)


def fit_interval(images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[float, float]:
    """The HU interval on the grid ``HU_EDGES`` whose thresholding best matches the masks (pooled Dice)."""
    inside = sum(np.histogram(im[m], HU_EDGES)[0] for im, m in zip(images, masks))
    every = sum(np.histogram(im, HU_EDGES)[0] for im in images)
    cum_in, cum_all = np.concatenate([[0], np.cumsum(inside)]), np.concatenate([[0], np.cumsum(every)])
    tp = cum_in[None, :] - cum_in[:, None]  # [lo, hi] over bin edges lo < hi
    predicted = cum_all[None, :] - cum_all[:, None]
    dice = np.where(tp > 0, 2 * tp / np.maximum(predicted + cum_in[-1], 1), 0.0)
    lo, hi = np.unravel_index(np.argmax(dice), dice.shape)
    return HU_EDGES[lo], HU_EDGES[hi]


def interval_dice(image: np.ndarray, mask: np.ndarray, lo: float, hi: float) -> float:
    predicted = (image >= lo) & (image < hi)
    return 2.0 * np.sum(predicted & mask) / max(int(predicted.sum() + mask.sum()), 1)


def test_oracle_finds_separable_intensities() -> None:
    """The oracle itself works: where an organ has its own HU range, it segments it perfectly."""
    rng = np.random.default_rng(0)
    mask = np.zeros((10, 20, 20), bool)
    mask[2:6, 5:15, 5:15] = True
    image = np.where(mask, rng.uniform(120, 180, mask.shape), rng.uniform(-100, 60, mask.shape))
    lo, hi = fit_interval([image], [mask])
    assert interval_dice(image, mask, lo, hi) == 1.0


def test_intensity_alone_cannot_segment_organs(phantoms) -> None:
    """Acceptance: the best HU interval per organ, fitted on ground truth, averages Dice < 0.5 on held-out phantoms."""
    train, test = phantoms[:5], phantoms[5:]
    dice = {}
    for organ in AMOS_ORGANS:
        lo, hi = fit_interval([im for im, _, _ in train], [lab == organ for _, lab, _ in train])
        dice[organ] = np.mean([interval_dice(im, lab == organ, lo, hi) for im, lab, _ in test])
    assert np.mean(list(dice.values())) < 0.5, dice
    assert max(dice.values()) > 0.25, dice  # intensity still carries some signal: the oracle is not degenerate


def test_every_organ_present(phantoms) -> None:
    for _, label, _ in phantoms:
        counts = np.bincount(label.ravel(), minlength=len(AMOS_ORGANS) + 1)
        assert len(counts) == len(AMOS_ORGANS) + 1
        assert counts[1:].min() >= 30, counts  # the adrenals are the smallest organs


def test_phantom_arrays_and_geometry(phantoms) -> None:
    image, label, geometry = phantoms[0]
    assert image.shape == label.shape == DEFAULT_SHAPE
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.min() < -900 and image.max() > 300  # air outside the body, bone inside
    sx, sy, sz = geometry.spacing
    assert 3.5 <= sx == sy <= 3.9 and sz == 5.0
    assert geometry.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_deterministic_per_seed() -> None:
    a, b, c = make_phantom(5), make_phantom(5), make_phantom(6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_plausible_anatomy(phantoms) -> None:
    for _, label, geometry in phantoms:
        pts = {name: voxels_mm(label, i, geometry) for name, i in ID.items()}
        x, y, z = ({name: p[:, k].mean() for name, p in pts.items()} for k in range(3))
        kidneys_z = (z["right kidney"] + z["left kidney"]) / 2
        assert x["liver"] < 0 < x["spleen"]  # +x is the patient's left
        assert z["liver"] > kidneys_z and z["spleen"] > kidneys_z
        assert x["right kidney"] < x["aorta"] < x["left kidney"]
        assert min(y["right kidney"], y["left kidney"]) > y["aorta"]  # +y is posterior
        assert x["inferior vena cava"] < x["aorta"]
        pelvic = ("bladder", "prostate/uterus")
        assert max(z[p] for p in pelvic) < min(v for name, v in z.items() if name not in pelvic)
        assert z["esophagus"] > z["stomach"]
        assert x["right adrenal gland"] < 0 < x["left adrenal gland"]
        assert y["gallbladder"] < y["liver"]  # the gallbladder lies on the liver's anterior underside
        for vessel in ("aorta", "inferior vena cava"):
            extent = np.ptp(pts[vessel], axis=0)
            assert extent[2] > 3 * max(extent[0], extent[1]), (vessel, extent)


def test_cases_vary(phantoms) -> None:
    volumes = np.array([[np.sum(label == i) * np.prod(g.spacing) for i in AMOS_ORGANS] for _, label, g in phantoms])
    cv = volumes.std(axis=0) / volumes.mean(axis=0)
    assert cv[ID["liver"] - 1] > 0.03, cv
    assert cv.min() > 0.03, cv


def test_dataset_reads_back_and_passes_nnunet_check(tmp_path: Path) -> None:
    # conftest points nnU-Net's folders at a temporary directory before nnunetv2 is imported.
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    root = synthesize_dataset(tmp_path / "ds", n_train=2, n_test=1, seed=4)
    verify_dataset_integrity(str(root), num_processes=1)

    ds = PartialDataset(root)
    assert ds.training_ids == ["phantom_000", "phantom_001"] and ds.test_ids == ["phantom_002"]
    assert ds.organ_names == AMOS_ORGANS and not ds.is_partial
    assert ds.dataset_json["ipnp"]["seed"] == 4 and ds.dataset_json["numTraining"] == 2
    case = ds.case("phantom_002", "test")
    image, geometry = read_image(case.image_paths[0])
    label, _ = case.load_label()
    expected_image, expected_label, expected_geometry = make_phantom(case_rng(4, 2))
    assert image.dtype == np.int16
    assert np.array_equal(image, np.clip(np.rint(expected_image), -1024, 3071).astype(np.int16))
    assert np.array_equal(label, expected_label)
    assert geometry.mismatch(expected_geometry) is None
    assert not any(p.name.startswith(".") for p in root.rglob("*"))  # no staging leftovers


def test_rejects_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(IpnpError, match="training case"):
        synthesize_dataset(tmp_path / "ds", n_train=0, n_test=1, seed=0)
    with pytest.raises(IpnpError, match="seed"):
        synthesize_dataset(tmp_path / "ds", n_train=1, n_test=0, seed=-1)
    assert not (tmp_path / "ds").exists()


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ds"
    argv = ["synth", str(out), "--cases", "2", "--test-cases", "1", "--seed", "3"]
    assert main(argv) == 0
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.nii.gz"))
    assert names == [
        "imagesTr/phantom_000_0000.nii.gz",
        "imagesTr/phantom_001_0000.nii.gz",
        "imagesTs/phantom_002_0000.nii.gz",
        "labelsTr/phantom_000.nii.gz",
        "labelsTr/phantom_001.nii.gz",
        "labelsTs/phantom_002.nii.gz",
    ]
    assert (out / "dataset.json").is_file()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
