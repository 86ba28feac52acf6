"""Prompts, refinement and pseudo-labeling rounds, with a stand-in specialist and generalists."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import tree_digest
from ipnp.data import PartialDataset
from ipnp.generalist.base import Generalist
from ipnp.pseudo.prompts import AnatomicalAxes, anatomical_axes, box_prompts, largest_component, median_slice
from ipnp.pseudo.refine import RefineSettings, entropy_map, mean_entropy, refine
from ipnp.pseudo.round import ACCEPTED, PSEUDO_MANIFEST, REJECTED, SKIPPED, STATUS_FILE, load_previous, run_round


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


def test_refine_keeps_confident_allowed_voxels_inside_the_roi():
    shape = (20, 20, 20)
    organ = np.zeros(shape, bool)
    organ[8:12, 8:12, 8:12] = True
    pair = box_prompts(organ, padding=1)
    candidate = np.ones(shape, bool)  # the generalist over-fills everything
    probs = np.full((3, *shape), 0.05, np.float16)
    probs[1] = 0.9
    probs[1, 10] = 0.39  # below τ on one slice
    probs[2] = np.linspace(0.01, 0.2, shape[0])[:, None, None]  # entropy changes from slice to slice
    allowed = np.ones(shape, bool)
    allowed[:, :, 9] = False  # a true label of another organ
    label = refine(candidate, probs, 1, pair, RefineSettings(tau=0.4, delta=3), allowed=allowed)
    roi = pair.roi(shape, 3)
    assert label.region == roi and label.mask.shape == candidate[roi].shape
    kept = np.zeros(shape, bool)
    kept[roi] = label.mask
    expected = np.zeros(shape, bool)
    expected[roi] = True
    expected[10] = False
    expected[:, :, 9] = False
    assert np.array_equal(kept, expected)
    assert label.voxels == expected.sum()
    assert label.entropy == pytest.approx(float(entropy_map(probs[:, expected]).mean()))
    entropy = entropy_map(probs)
    assert mean_entropy(kept, entropy) == pytest.approx(label.entropy)
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


def test_round_records_the_dice_of_the_specialists_own_masks(simulated, tmp_path):
    from ipnp.loop import summarize

    case_id = _one_case(simulated)
    case = simulated.case(case_id)
    full, _ = case.load_full_label()
    specialist = StandInSpecialist(simulated)
    organ = max(case.unknown, key=lambda o: int((full == o).sum()))
    truth = full == organ
    # The specialist misses the organ's upper half of slices.
    z = np.nonzero(truth.any(axis=(1, 2)))[0]
    missed = truth & (np.arange(full.shape[0]) < z[len(z) // 2])[:, None, None]
    specialist.full[case_id] = np.where(missed, 0, full)
    run_round(simulated, specialist, BoxGeneralist(), tmp_path / "run", 1, cases=[case_id])
    organs = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())["cases"][case_id]["organs"]
    found = truth & ~missed
    expected = 2 * found.sum() / (found.sum() + truth.sum())
    assert 0 < expected < 0.95 and organs[str(organ)]["specialist_dice"] == pytest.approx(expected)
    others = [e for o, e in organs.items() if int(o) != organ]
    assert all(e["specialist_dice"] == pytest.approx(1.0) for e in others)
    [first] = summarize(tmp_path / "run")["rounds"]
    dice = [e["dice"] for e in organs.values()]
    assert first["accepted_dice"] == pytest.approx([np.mean(dice), np.mean([e["specialist_dice"] for e in organs.values()])])


def test_a_failing_or_garbage_generalist_rejects_only_that_organ(simulated, tmp_path):
    case_id = _one_case(simulated)
    unknown = sorted(simulated.case(case_id).unknown)
    assert len(unknown) >= 2
    run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(fail={0}, garbage={1}), tmp_path / "run", 1,
              RefineSettings(trust_cases=0), cases=[case_id])
    organs = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())["cases"][case_id]["organs"]
    first, second = organs[str(unknown[0])], organs[str(unknown[1])]
    assert first["status"] == REJECTED and "server dropped the connection" in first["reason"] and not first["pseudo_label"]
    assert second["status"] == REJECTED and "shape" in second["reason"]
    assert all(organs[str(o)]["status"] == ACCEPTED for o in unknown[2:])


def test_a_generalist_that_cannot_take_the_image_rejects_that_case_only(simulated, tmp_path):
    class Refusing(BoxGeneralist):
        def set_image(self, image, spacing_zyx):
            if refused:
                raise MemoryError("image too large for the server")
            super().set_image(image, spacing_zyx)

    first, second = simulated.training_ids[:2]
    out = tmp_path / "run"
    refused = False
    run_round(simulated, StandInSpecialist(simulated), Refusing(), out, 1, cases=[first])
    refused = True
    run_round(simulated, StandInSpecialist(simulated), Refusing(), out, 2, cases=[first, second])
    cases = json.loads((out / "rounds/2/pseudo_status.json").read_text())["cases"]
    for case_id, carried in ((first, True), (second, False)):
        for entry in cases[case_id]["organs"].values():
            assert entry["status"] == REJECTED and "too large for the server" in entry["reason"]
            assert entry["pseudo_label"] is carried  # round 1's pseudo-labels of the first case are kept
    merged1 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "rounds/1/labels" / f"{first}.nii.gz")))
    merged2 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "rounds/2/labels" / f"{first}.nii.gz")))
    assert np.array_equal(merged1, merged2)


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
    assert previous and all(label.mask.any() for label in previous.values())
    # Less certain specialist in round 2: every organ's mean entropy rises, the gate keeps round 1's labels.
    run_round(simulated, StandInSpecialist(simulated, confidence=0.6), BoxGeneralist(), out, 2, gate_active=True, cases=[case_id])
    organs = json.loads((out / "rounds/2/pseudo_status.json").read_text())["cases"][case_id]["organs"]
    for organ, entry in organs.items():
        assert entry["status"] == REJECTED and "did not fall" in entry["reason"] and entry["pseudo_label"]
        assert entry["reference_entropy"] == pytest.approx(previous[int(organ)].entropy)
    merged1 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "rounds/1/labels" / f"{case_id}.nii.gz")))
    merged2 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "rounds/2/labels" / f"{case_id}.nii.gz")))
    assert np.array_equal(merged1, merged2)
    # More certain in round 3: accepted again.
    run_round(simulated, StandInSpecialist(simulated, confidence=0.95), BoxGeneralist(), out, 3, gate_active=True, cases=[case_id])
    organs = json.loads((out / "rounds/3/pseudo_status.json").read_text())["cases"][case_id]["organs"]
    assert all(entry["status"] == ACCEPTED for entry in organs.values())


def test_entropy_ceiling_refuses_unsure_pseudo_labels_in_every_round(simulated, tmp_path):
    from scipy.special import entr

    case_id = _one_case(simulated)
    out = tmp_path / "run"
    classes = StandInSpecialist(simulated).classes

    def voxel_entropy(confidence: float) -> float:
        return float(entr(confidence) + (classes - 1) * entr((1 - confidence) / (classes - 1)))

    settings = RefineSettings(max_entropy=(voxel_entropy(0.6) + voxel_entropy(0.95)) / 2)

    def organs_after(k: int, confidence: float) -> dict:
        run_round(simulated, StandInSpecialist(simulated, confidence), BoxGeneralist(), out, k, settings, cases=[case_id])
        return json.loads((out / f"rounds/{k}/pseudo_status.json").read_text())["cases"][case_id]["organs"]

    first = organs_after(1, 0.6)  # unsure, and nothing to fall back on: the organs stay unknown
    assert first and all(e["status"] == REJECTED and "above the ceiling" in e["reason"] and not e["pseudo_label"]
                         for e in first.values())
    assert all(e["status"] == ACCEPTED for e in organs_after(2, 0.95).values())
    third = organs_after(3, 0.6)  # the gate is off, the ceiling still holds; round 2's labels are kept
    assert all(e["status"] == REJECTED and e["pseudo_label"] and "previous pseudo-label kept" in e["reason"]
               for e in third.values())
    assert all(e["mean_entropy"] == pytest.approx(voxel_entropy(0.6), rel=1e-3) for e in third.values())


def test_largest_component_keeps_the_biggest_object_only():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:8, 2:8, 2:8] = True  # 216 voxels
    mask[12:15, 12:15, 12:15] = True  # 27
    mask[9, 9, 18] = True
    kept = largest_component(mask)
    assert kept.sum() == 216 and kept[2:8, 2:8, 2:8].all()
    assert np.array_equal(largest_component(kept), kept)
    assert not largest_component(np.zeros((3, 3, 3), bool)).any()


@pytest.mark.parametrize("largest", [True, False])
def test_a_stray_speck_of_the_prediction_does_not_stretch_the_prompts(largest):
    """The boxes frame the organ, not a false-positive voxel far from it, unless the paper's rule is asked for."""
    from ipnp.data.io import Geometry
    from ipnp.pseudo.round import RoundCase, pseudo_label_case

    shape = (16, 16, 16)
    predicted = np.zeros(shape, np.uint8)
    predicted[3:9, 3:9, 3:9] = 1
    predicted[5, 14, 14] = 1  # on the axial median slice (z = 5)
    probs = np.stack([predicted == 0, predicted == 1]).astype(np.float16)
    generalist = BoxGeneralist()
    case = RoundCase("case", {1}, Geometry.from_spacing((1, 1, 1)), np.zeros(shape, np.uint8),
                     image=np.zeros((1, *shape), np.float32), predicted=predicted, probs=probs)
    pseudo_label_case(case, generalist, RefineSettings(padding=0, delta=0, largest_component=largest), gate_active=False)
    (prompts,) = generalist.calls
    assert prompts.axial.bounds[2] == ((3, 9) if largest else (3, 15))


def test_where_pseudo_labels_overlap_the_higher_probability_wins_even_for_a_carried_one():
    from ipnp.data.io import Geometry
    from ipnp.pseudo.refine import PseudoLabel
    from ipnp.pseudo.round import RoundCase, pseudo_label_case

    shape = (10, 12, 14)
    predicted = np.zeros(shape, np.uint8)
    predicted[2:6, 2:8, 2:8] = 1
    predicted[2:6, 5:11, 5:11] = 2  # overlaps organ 1 on y, x in 5..7
    probs = np.zeros((3, *shape), np.float32)
    probs[1][predicted == 1], probs[2][predicted == 1] = 0.9, 0.05
    probs[1][predicted == 2], probs[2][predicted == 2] = 0.05, 0.9
    probs[1:, 2:6, 5:8, 5:7] = np.array([0.5, 0.45])[:, None, None, None]  # both above τ where they overlap,
    probs[1:, 2:6, 5:8, 7] = np.array([0.42, 0.55])[:, None, None]  # organ 2 surer from x = 7 on
    probs[0] = 1 - probs[1] - probs[2]
    probs = probs.astype(np.float16)
    ground_truth = np.zeros(shape, np.uint8)
    ground_truth[:, 10:, :] = 3  # a true label is never overwritten
    settings = RefineSettings(padding=0, tau=0.4, delta=0)

    def run(previous, gate):
        case = RoundCase("case", {1, 2}, Geometry.from_spacing((1, 1, 1)), ground_truth, previous,
                         image=np.zeros((1, *shape), np.float32), predicted=predicted, probs=probs)
        return pseudo_label_case(case, BoxGeneralist(), settings, gate_active=gate)

    merged, result = run({}, False)
    overlap = (slice(2, 6), slice(5, 8))
    assert (merged[overlap][:, :, 5:7] == 1).all() and (merged[overlap][:, :, 7] == 2).all()
    assert (merged[:, 10:] == 3).all()
    assert result.organs[2].voxels == int((merged == 2).sum())
    # Organ 2 carried from an earlier round (the gate rejects the new one): this round's probabilities decide.
    region = (slice(2, 6), slice(5, 11), slice(5, 11))
    carried = PseudoLabel(region, np.ones((4, 6, 6), bool), entropy=0.0)
    merged_carried, result = run({2: carried}, True)
    assert result.organs[2].status == REJECTED and result.organs[2].pseudo_label
    assert np.array_equal(merged_carried[:, :10], merged[:, :10])


def test_a_round_needs_its_predecessor_and_appears_only_when_complete(simulated, tmp_path):
    from ipnp.errors import IpnpError

    out = tmp_path / "run"
    with pytest.raises(IpnpError, match="round 1 is missing"):
        run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), out, 2)

    class Exploding(StandInSpecialist):
        def predict(self, image, geometry):
            raise KeyboardInterrupt  # an interrupt in the middle of the round

    with pytest.raises(KeyboardInterrupt):
        run_round(simulated, Exploding(simulated), BoxGeneralist(), out, 1)
    assert not (out / "rounds/1").exists()
    folder = run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), out, 1)
    assert [p.name for p in (out / "rounds").iterdir()] == ["1"]  # the unfinished round's folder is gone
    assert sorted(p.name for p in folder.iterdir()) == ["labels", STATUS_FILE]
    assert sorted(p.name for p in (folder / "labels").iterdir()) == sorted(
        [f"{c}.nii.gz" for c in simulated.training_ids] + [PSEUDO_MANIFEST])
    # A complete round is returned untouched; asked for with other settings or cases, it is an error.
    written = (folder / STATUS_FILE).stat().st_mtime_ns
    assert run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), out, 1) == folder
    assert (folder / STATUS_FILE).stat().st_mtime_ns == written
    with pytest.raises(IpnpError, match="already exists"):
        run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), out, 1, RefineSettings(tau=0.5))
    with pytest.raises(IpnpError, match="already exists"):
        run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), out, 1, cases=simulated.training_ids[:1])
    with pytest.raises(IpnpError, match="must not be an input folder or lie inside one"):
        run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), simulated.root / "run", 1)


@pytest.mark.parametrize("kwargs, message", [({"tau": 1.5}, "tau"), ({"padding": -1}, "padding"), ({"delta": -2}, "delta"),
                                            ({"max_entropy": 0.0}, "max_entropy")])
def test_settings_out_of_range_are_refused(kwargs, message):
    from ipnp.errors import IpnpError

    with pytest.raises(IpnpError, match=message):
        RefineSettings(**kwargs)


# --- the specialist's probabilities ---------------------------------------------------------------

def _nnunet_pieces(regions: bool):
    """nnU-Net's configuration and label managers for a small case with a transposed axis order and a crop."""
    from types import SimpleNamespace

    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    plans = SimpleNamespace(transpose_forward=[2, 0, 1], transpose_backward=[1, 2, 0])
    configuration = ConfigurationManager({
        "architecture": {}, "spacing": [2.0, 3.0, 2.5], "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
    })
    if regions:
        labels = LabelManager({"background": 0, "a": [1, 2, 3], "b": [2, 3], "c": 3}, regions_class_order=[1, 2, 3])
    else:
        labels = LabelManager({"background": 0, "a": 1, "b": 2, "c": 3}, regions_class_order=None)
    # Transposed axis order: shapes and the nonzero crop are nnU-Net's; raw (z, y, x) spacing.
    properties = {"spacing": [1.0, 1.2, 0.8], "shape_before_cropping": [12, 14, 10],
                  "bbox_used_for_cropping": [[1, 10], [2, 13], [0, 8]],
                  "shape_after_cropping_and_before_resampling": [9, 11, 8]}
    return plans, configuration, labels, properties


@pytest.mark.parametrize("regions", [False, True])
def test_probabilities_by_region_equal_nnunets_export(regions):
    """Class-by-class resampling, slab-wise labels and region-wise probabilities give what nnU-Net's export gives."""
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    from ipnp.specialist.predict import CaseProbabilities, resample_logits

    plans, configuration, label_manager, properties = _nnunet_pieces(regions)
    heads = label_manager.num_segmentation_heads
    logits = torch.from_numpy(np.random.default_rng(0).normal(0, 3, (heads, 6, 7, 5)).astype(np.float16))
    expected_labels, expected = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, plans, configuration, label_manager, dict(properties), return_probabilities=True)
    probs = CaseProbabilities(resample_logits(logits, properties, plans, configuration), properties,
                              plans.transpose_forward, label_manager)
    assert probs.shape == expected.shape == (heads, 14, 10, 12)
    assert np.array_equal(probs.labels(), expected_labels)
    np.testing.assert_allclose(np.asarray(probs), expected, atol=1e-3)
    if not regions:
        np.testing.assert_allclose(np.asarray(probs).astype(np.float32).sum(0), 1.0, atol=5e-3)
    # A region across the crop's border, one outside it, and one class of a region.
    for region in [(slice(0, 5), slice(3, 14), slice(7, 12)), (slice(0, 1), slice(0, 2), slice(0, 12))]:
        np.testing.assert_allclose(probs[(slice(None), *region)], expected[(slice(None), *region)], atol=1e-3)
    np.testing.assert_allclose(probs[2, 4:9, :, 1:3], expected[2, 4:9, :, 1:3], atol=1e-3)
    with pytest.raises(TypeError):
        probs[1, ::2]


def test_a_simulation_records_the_pseudo_labels_dice_and_precision():
    """Precision counts the pseudo-label's voxels off the organ; the voxels it misses lower only the Dice."""
    from ipnp.data.io import Geometry
    from ipnp.pseudo.round import RoundCase, pseudo_label_case

    shape = (10, 12, 14)
    predicted = np.zeros(shape, np.uint8)
    predicted[2:6, 2:8, 2:8] = 1  # 144 voxels; the box generalist answers exactly this box
    probs = np.stack([predicted == 0, predicted == 1]).astype(np.float16)
    full = np.zeros(shape, np.uint8)
    full[2:6, 2:8, 2:5] = 1  # half of the box ...
    full[7:9, 2:8, 2:8] = 1  # ... and 72 voxels outside it
    case = RoundCase("case", {1}, Geometry.from_spacing((1, 1, 1)), np.zeros(shape, np.uint8), full_label=full,
                     image=np.zeros((1, *shape), np.float32), predicted=predicted, probs=probs)
    _, result = pseudo_label_case(case, BoxGeneralist(), RefineSettings(padding=0, delta=0), gate_active=False)
    outcome = result.organs[1]
    assert outcome.voxels == 144
    assert outcome.precision == pytest.approx(72 / 144)
    assert outcome.dice == pytest.approx(2 * 72 / (144 + 144))
