"""Prompts, refinement and pseudo-labeling rounds, with a stand-in specialist and generalists."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_dataset, tree_digest
from ipnp.data import PartialDataset
from ipnp.generalist.base import Generalist
from ipnp.pseudo.prompts import AnatomicalAxes, anatomical_axes, box_prompts, median_slice
from ipnp.pseudo.refine import RefineSettings, entropy_map, mean_entropy, refine
from ipnp.pseudo.round import ACCEPTED, REJECTED, SKIPPED, load_previous, run_round


# --- prompts ---------------------------------------------------------------------------------------

def test_median_slice_is_a_foreground_slice():
    mask = np.zeros((10, 5, 5), bool)
    mask[[1, 2, 7, 8], 2, 2] = True
    assert median_slice(mask, 0) == 2  # lower median of [1, 2, 7, 8]: a slice that holds foreground
    mask[5, 2, 2] = True
    assert median_slice(mask, 0) == 5


def test_boxes_are_padded_clipped_and_on_the_median_slices():
    mask = np.zeros((20, 30, 40), bool)
    mask[4:13, 1:10, 30:38] = True
    pair = box_prompts(mask, padding=6)
    assert pair.axial.bounds == ((8, 9), (0, 16), (24, 40))  # z median 8; y clipped at 0, x clipped at 40
    assert pair.sagittal.bounds == ((0, 19), (0, 16), (33, 34))  # x median 33
    assert pair.axial.plane_axis == 0 and pair.sagittal.plane_axis == 2
    assert pair.axial.as_nninteractive() == [[8, 9], [0, 16], [24, 40]]
    assert pair.roi(mask.shape, dilation=3) == (slice(0, 20), slice(0, 19), slice(21, 40))
    assert box_prompts(np.zeros((4, 4, 4), bool)) is None


def test_axial_box_lies_in_a_physical_axial_plane_for_a_rotated_image():
    """An image whose array axis 1 runs superior-inferior: the axial box must lie across axis 1."""
    direction = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # ITK index j along physical z
    image = sitk.GetImageFromArray(np.zeros((12, 14, 16), np.int16))
    image.SetDirection(direction)
    axes = anatomical_axes(image.GetDirection())
    assert axes == AnatomicalAxes(axial=1, sagittal=0)
    mask = np.zeros((12, 14, 16), bool)
    mask[3:9, 4:11, 5:12] = True
    pair = box_prompts(mask, padding=1, axes=axes)
    (z0, z1), (y0, y1), (x0, x1) = pair.axial.bounds
    corners = [image.TransformIndexToPhysicalPoint((x, y, z)) for z in (z0, z1 - 1) for y in (y0, y1 - 1) for x in (x0, x1 - 1)]
    assert len({round(c[2], 6) for c in corners}) == 1  # every corner at the same height: an axial plane
    (z0, z1), (y0, y1), (x0, x1) = pair.sagittal.bounds
    corners = [image.TransformIndexToPhysicalPoint((x, y, z)) for z in (z0, z1 - 1) for y in (y0, y1 - 1) for x in (x0, x1 - 1)]
    assert len({round(c[0], 6) for c in corners}) == 1  # same left-right position: a sagittal plane


# --- refinement ------------------------------------------------------------------------------------

def test_entropy_of_certain_and_uniform_probabilities():
    probs = np.zeros((4, 2, 2, 2), np.float16)
    probs[1] = 1
    assert np.allclose(entropy_map(probs), 0, atol=1e-5)
    assert np.allclose(entropy_map(np.full((4, 2, 2, 2), 0.25, np.float16)), np.log(4), atol=1e-3)


def test_refine_keeps_confident_voxels_inside_the_roi():
    shape = (20, 20, 20)
    organ = np.zeros(shape, bool)
    organ[8:12, 8:12, 8:12] = True
    pair = box_prompts(organ, padding=1)
    candidate = np.ones(shape, bool)  # the generalist over-fills everything
    probability = np.full(shape, 0.9, np.float32)
    probability[10] = 0.39  # below τ on one slice
    refined = refine(candidate, probability, pair, RefineSettings(tau=0.4, delta=3))
    roi = pair.roi(shape, 3)
    assert refined[roi].sum() == candidate[roi].sum() - (roi[1].stop - roi[1].start) * (roi[2].stop - roi[2].start)
    outside = np.ones(shape, bool)
    outside[roi] = False
    assert not refined[outside].any() and not refined[10].any()
    entropy = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    assert mean_entropy(refined, entropy) == pytest.approx(entropy[refined].mean())
    assert np.isnan(mean_entropy(np.zeros(shape, bool), entropy))


# --- rounds ----------------------------------------------------------------------------------------

class StandInSpecialist:
    """Predicts the complete label with a chosen confidence: enough to drive a round without training."""

    is_softmax = True
    run_dir = Path("stand-in")

    def __init__(self, dataset: PartialDataset, confidence: float = 0.9):
        self.full = {c: dataset.case(c).load_full_label()[0] for c in dataset.training_ids}
        self.case_of_image = {dataset.case(c).load_image()[0].tobytes(): c for c in dataset.training_ids}
        self.confidence = confidence
        self.classes = max(dataset.organ_ids) + 1

    def predict(self, image, geometry):
        labels = self.full[self.case_of_image[image.tobytes()]]
        probs = np.full((self.classes, *labels.shape), (1 - self.confidence) / (self.classes - 1), np.float32)
        np.put_along_axis(probs, labels[None].astype(np.int64), self.confidence, axis=0)
        return labels, probs.astype(np.float16)


class BoxGeneralist(Generalist):
    """Answers with the whole 3D ROI of the prompts; can be told to fail for some organs."""

    def __init__(self, fail=(), garbage=()):
        self.fail, self.garbage = set(fail), set(garbage)
        self.calls = []

    def set_image(self, image, spacing_zyx):
        self.shape = image.shape

    def segment(self, prompts):
        organ_hint = len(self.calls)
        self.calls.append(prompts)
        if organ_hint in self.fail:
            raise RuntimeError("server dropped the connection")
        if organ_hint in self.garbage:
            return np.ones((2, 2, 2))
        return prompts.roi_mask(self.shape, dilation=0)


@pytest.fixture
def simulated(tmp_path):
    """A partial dataset with complete labels beside it, as `ipnp partial` writes it."""
    from ipnp.data.partial import simulate_partial_labels

    src = make_dataset(tmp_path / "full", n_train=6, n_test=0, shape=(12, 16, 18), seed=3)
    simulate_partial_labels(src, tmp_path / "partial", keep=0.34, seed=0)
    return PartialDataset(tmp_path / "partial")


def _one_case(ds):
    return ds.training_ids[0]


def test_round_fills_only_unknown_organs_on_background(simulated, tmp_path):
    before = tree_digest(simulated.root)
    out = tmp_path / "run"
    case_id = _one_case(simulated)
    run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), out, 1, cases=[case_id])
    assert tree_digest(simulated.root) == before
    case = simulated.case(case_id)
    gt, _ = case.load_label()
    full, _ = case.load_full_label()
    merged = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "rounds/1/labels" / f"{case_id}.nii.gz")))
    assert np.array_equal(merged[gt > 0], gt[gt > 0])  # true labels never change
    assert set(np.unique(merged[gt == 0])) <= {0, *case.unknown}  # only unknown organs are added
    status = json.loads((out / "rounds/1/pseudo_status.json").read_text())
    organs = status["cases"][case_id]["organs"]
    assert set(organs) == {str(o) for o in case.unknown}
    for organ, entry in organs.items():
        assert entry["status"] == ACCEPTED and entry["pseudo_label"]
        assert entry["voxels"] == int((merged == int(organ)).sum()) > 0
        assert entry["dice"] == pytest.approx(1.0)  # box generalist + exact specialist + τ: the organ itself
        assert entry["mean_entropy"] > 0
    manifest = json.loads((out / "rounds/1/labels/pseudo_labels.json").read_text())
    assert manifest[case_id] == sorted(int(o) for o in organs)
    assert set(status["cases"][case_id]["seconds"]) == {"predict", "generalist", "refine", "io"}


def test_a_failing_or_garbage_generalist_rejects_only_that_organ(simulated, tmp_path):
    case_id = _one_case(simulated)
    unknown = sorted(simulated.case(case_id).unknown)
    assert len(unknown) >= 2
    run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(fail={0}, garbage={1}), tmp_path / "run", 1, cases=[case_id])
    organs = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())["cases"][case_id]["organs"]
    first, second = organs[str(unknown[0])], organs[str(unknown[1])]
    assert first["status"] == REJECTED and "server dropped the connection" in first["reason"] and not first["pseudo_label"]
    assert second["status"] == REJECTED and "shape" in second["reason"]
    assert all(organs[str(o)]["status"] == ACCEPTED for o in unknown[2:])


def test_empty_prediction_is_skipped(simulated, tmp_path):
    case_id = _one_case(simulated)
    specialist = StandInSpecialist(simulated)
    organ = sorted(simulated.case(case_id).unknown)[0]
    specialist.full[case_id] = np.where(specialist.full[case_id] == organ, 0, specialist.full[case_id])
    run_round(simulated, specialist, BoxGeneralist(), tmp_path / "run", 1, cases=[case_id])
    entry = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())["cases"][case_id]["organs"][str(organ)]
    assert entry["status"] == SKIPPED and "no voxel" in entry["reason"]


def test_entropy_gate_accepts_only_a_more_certain_pseudo_label(simulated, tmp_path):
    case_id = _one_case(simulated)
    out = tmp_path / "run"
    run_round(simulated, StandInSpecialist(simulated, confidence=0.8), BoxGeneralist(), out, 1, cases=[case_id])
    previous = load_previous(out, 1, case_id, simulated.file_ending)
    assert previous and all(mask.any() for mask, _ in previous.values())
    # Less certain specialist in round 2: every organ's mean entropy rises, the gate keeps round 1's labels.
    run_round(simulated, StandInSpecialist(simulated, confidence=0.6), BoxGeneralist(), out, 2, gate_active=True, cases=[case_id])
    organs = json.loads((out / "rounds/2/pseudo_status.json").read_text())["cases"][case_id]["organs"]
    for organ, entry in organs.items():
        assert entry["status"] == REJECTED and "did not fall" in entry["reason"] and entry["pseudo_label"]
        assert entry["reference_entropy"] == pytest.approx(previous[int(organ)][1])
    merged1 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "rounds/1/labels" / f"{case_id}.nii.gz")))
    merged2 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "rounds/2/labels" / f"{case_id}.nii.gz")))
    assert np.array_equal(merged1, merged2)
    # More certain in round 3: accepted again.
    run_round(simulated, StandInSpecialist(simulated, confidence=0.95), BoxGeneralist(), out, 3, gate_active=True, cases=[case_id])
    organs = json.loads((out / "rounds/3/pseudo_status.json").read_text())["cases"][case_id]["organs"]
    assert all(entry["status"] == ACCEPTED for entry in organs.values())


def test_a_round_needs_its_predecessor_and_is_written_whole(simulated, tmp_path):
    from ipnp.errors import IpnpError

    with pytest.raises(IpnpError, match="round 1 is missing"):
        run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), tmp_path / "run", 2)

    class Exploding(StandInSpecialist):
        def predict(self, image, geometry):
            raise KeyboardInterrupt  # a kill in the middle of the round

    with pytest.raises(KeyboardInterrupt):
        run_round(simulated, Exploding(simulated), BoxGeneralist(), tmp_path / "run", 1)
    assert not (tmp_path / "run/rounds/1").exists()
    assert not any(p.name.endswith("ipnp-incomplete") for p in (tmp_path / "run/rounds").iterdir())


@pytest.mark.parametrize("kwargs, message", [({"tau": 1.5}, "tau"), ({"padding": -1}, "padding"), ({"delta": -2}, "delta")])
def test_settings_out_of_range_are_refused(kwargs, message):
    from ipnp.errors import IpnpError

    with pytest.raises(IpnpError, match=message):
        RefineSettings(**kwargs)
