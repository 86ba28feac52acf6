"""The position check of pseudo-labels: organ placements in mm, the prior from labelled cases, and its use in a round."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_dataset
from ipnp.data import PartialDataset
from ipnp.data.io import Geometry
from ipnp.data.partial import simulate_partial_labels
from ipnp.pseudo.placement import Placement, PlacementPrior, label_placements, placement
from ipnp.pseudo.refine import PseudoLabel, RefineSettings
from ipnp.pseudo.round import ACCEPTED, REJECTED, RoundCase, pseudo_label_case, run_round
from test_pseudo import BoxGeneralist, StandInSpecialist


def test_placement_is_in_physical_millimetres_for_a_rotated_anisotropic_image():
    image = sitk.GetImageFromArray(np.zeros((12, 14, 16), np.uint8))
    image.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    image.SetSpacing((0.7, 2.0, 3.5))
    image.SetOrigin((10.0, -40.0, 5.0))
    geometry = Geometry.of(image)
    mask = np.zeros((12, 14, 16), bool)
    mask[2:5, 3:12, 6:8] = True
    mask[9, 10, 14] = True
    points = np.array([image.TransformIndexToPhysicalPoint(tuple(int(i) for i in zyx[::-1])) for zyx in np.argwhere(mask)])
    found = placement(mask, geometry)
    np.testing.assert_allclose(found.centre, points.mean(axis=0), atol=1e-9)
    assert found.radius == pytest.approx(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))
    region = (slice(2, 10), slice(3, 12), slice(6, 15))
    cropped = placement(mask[region], geometry, region)
    np.testing.assert_allclose(cropped.centre, found.centre)
    assert cropped.radius == pytest.approx(found.radius)
    assert placement(np.zeros((3, 3, 3), bool), geometry) is None

    labels = mask.astype(np.uint8) * 3
    labels[0, 0, 0] = 1
    assert set(label_placements(labels, geometry, {3, 2})) == {3}  # organ 2 has no voxel; 1 is not asked for


def _anatomy(seed=0, cases=8, organs=4, jitter=2.0):
    """Cases of one anatomy, each shifted by up to 100 mm, organs moved by a few mm, every case labelling a subset."""
    rng = np.random.default_rng(seed)
    template = {o: rng.uniform(-80, 80, 3) for o in range(1, organs + 1)}
    shifts, labelled = {}, {}
    for c in range(cases):
        case_id = f"case_{c}"
        shifts[case_id] = rng.uniform(-100, 100, 3)
        kept = rng.choice(np.arange(1, organs + 1), size=2, replace=False)
        labelled[case_id] = {int(o): Placement(template[o] + shifts[case_id] + rng.uniform(-jitter, jitter, 3), 10.0)
                             for o in kept}
    return template, shifts, labelled


def test_prior_predicts_an_organ_from_the_organs_a_case_labels():
    template, shifts, labelled = _anatomy()
    prior = PlacementPrior(labelled, radii=1.5)
    for case_id, organs in labelled.items():
        for organ in set(template) - set(organs):
            expected = prior.expected(case_id, organ)
            if expected is None:
                continue
            # Shifts of up to 100 mm cancel; what remains is the organs' own jitter (2 mm per axis, three organs).
            assert np.linalg.norm(expected - (template[organ] + shifts[case_id])) < 6 * np.sqrt(3)
    for organ, tolerance in prior.tolerance.items():
        assert 15.0 <= tolerance < 15.0 + 6 * np.sqrt(3)  # 1.5 radii of 10 mm plus the leave-one-out error
    case_id = "case_0"
    organ = next(o for o in template if o not in labelled[case_id] and prior.expected(case_id, o) is not None)
    right = template[organ] + shifts[case_id]
    distance, tolerance = prior.offset(case_id, organ, Placement(right, 10.0))
    assert distance < tolerance
    distance, _ = prior.offset(case_id, organ, Placement(right + np.array([0.0, 60.0, 0.0]), 10.0))
    assert distance > tolerance
    assert prior.offset(case_id, organ, None) is None
    assert prior.expected("a case with no labels", organ) is None


def test_no_check_where_too_few_cases_label_an_organ():
    labelled = {"a": {1: Placement(np.zeros(3), 5.0), 2: Placement(np.ones(3), 5.0)},
                "b": {1: Placement(np.zeros(3), 5.0)}}
    prior = PlacementPrior(labelled)
    assert 2 not in prior.tolerance  # one case labels organ 2: nothing says how much it varies
    assert prior.offset("b", 2, Placement(np.full(3, 500.0), 5.0)) is None


def test_a_pseudo_label_in_the_wrong_place_is_refused_and_a_previous_one_kept():
    """Organ 1 lies 8 voxels above organ 2 in every labelled case; the specialist puts it beside organ 2 instead."""
    shape = (24, 16, 16)
    geometry = Geometry.from_spacing((2.0, 2.0, 2.0))
    ground_truth = np.zeros(shape, np.uint8)
    ground_truth[14:18, 6:10, 6:10] = 2
    organ2 = placement(ground_truth == 2, geometry)
    above = Placement(organ2.centre - np.array([0.0, 0.0, 16.0]), 3.0)  # 8 voxels of 2 mm towards z = 0
    labelled = {"case": {2: organ2}}
    for k, shift in enumerate((-4.0, 0.0, 4.0)):
        move = np.array([shift, 10.0 * k, 0.0])
        labelled[f"other_{k}"] = {1: Placement(above.centre + move, 3.0), 2: Placement(organ2.centre + move, 3.0)}
    prior = PlacementPrior(labelled)

    def run(predicted_box, previous):
        predicted = np.zeros(shape, np.uint8)
        predicted[predicted_box] = 1
        probs = np.stack([predicted == 0, predicted == 1, np.zeros(shape, bool)]).astype(np.float16) * 0.98 + 0.01
        case = RoundCase("case", {1}, geometry, ground_truth, previous, image=np.zeros((1, *shape), np.float32),
                         predicted=predicted, probs=probs)
        return pseudo_label_case(case, BoxGeneralist(), RefineSettings(padding=0, delta=0), gate_active=False, prior=prior)

    merged, result = run((slice(6, 10), slice(6, 10), slice(6, 10)), {})  # 8 voxels above organ 2
    outcome = result.organs[1]
    assert outcome.status == ACCEPTED and outcome.offset_mm < 1.0 and outcome.tolerance_mm > 4.0
    assert (merged == 1).sum() == 64

    wrong = (slice(14, 18), slice(6, 10), slice(0, 4))  # beside organ 2, 12 mm off in x and 16 mm in z
    merged, result = run(wrong, {})
    outcome = result.organs[1]
    assert outcome.status == REJECTED and "mm from where" in outcome.reason and not outcome.pseudo_label
    assert outcome.offset_mm == pytest.approx(20.0) and outcome.offset_mm > outcome.tolerance_mm
    assert not (merged == 1).any()

    kept = np.ones((2, 2, 2), bool)
    previous = {1: PseudoLabel((slice(7, 9), slice(7, 9), slice(7, 9)), kept, entropy=0.3)}
    merged, result = run(wrong, previous)
    assert result.organs[1].pseudo_label and "previous pseudo-label kept" in result.organs[1].reason
    assert (merged[7:9, 7:9, 7:9] == 1).all() and (merged == 1).sum() == 8


def test_a_round_with_the_position_check_records_each_checked_offset(tmp_path):
    src = make_dataset(tmp_path / "full", n_train=8, n_test=0, shape=(12, 16, 18), seed=3)
    simulate_partial_labels(src, tmp_path / "partial", keep=0.67, seed=0)
    simulated = PartialDataset(tmp_path / "partial")
    run_round(simulated, StandInSpecialist(simulated), BoxGeneralist(), tmp_path / "run", 1,
              RefineSettings(position_check=True))
    status = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())
    assert status["settings"]["position_check"] is True
    checked = [entry for case in status["cases"].values() for entry in case["organs"].values()
               if entry["offset_mm"] is not None]
    assert checked
    for entry in checked:
        assert (entry["status"] == ACCEPTED) == (entry["offset_mm"] <= entry["tolerance_mm"])
