"""The generalist's trust test: measured on labelled cases, it stops pseudo-labels of organs where the
generalist is worse than the specialist."""

import json

import numpy as np
import pytest
from scipy import ndimage

from ipnp.pseudo.prompts import box_prompts, largest_component
from ipnp.pseudo.refine import RefineSettings
from ipnp.pseudo.round import ACCEPTED, REJECTED, run_round
from ipnp.pseudo.trust import OrganTrust, organ_trust, trust_plan
from test_pseudo import BoxGeneralist, StandInSpecialist


class OrganBlindGeneralist(BoxGeneralist):
    """Answers the whole ROI, except for the organs in ``blind``: there only the axial prompt's slice. The
    stand-in specialist predicts the full labels, so those organs' prompts are known in advance."""

    def __init__(self, dataset, blind):
        super().__init__()
        self.blind_prompts = set()
        for case_id in dataset.training_ids:
            full = dataset.case(case_id).load_full_label()[0]
            self.blind_prompts |= {box_prompts(largest_component(full == organ), 6) for organ in blind}

    def segment(self, prompts):
        if prompts in self.blind_prompts:
            axial = np.zeros(self.shape, bool)
            axial[tuple(slice(lo, hi) for lo, hi in prompts.axial.bounds)] = True
            return axial
        return prompts.roi_mask(self.shape, dilation=0)


def test_plan_covers_each_organ_at_most_n_times_from_the_best_labelled_cases(simulated):
    ds = simulated
    plan = trust_plan(ds, ds.training_ids, 2)
    for organ in ds.organ_ids:
        labelling = [c for c in ds.training_ids if organ in ds.labeled_organs(c)]
        tested = [c for c, organs in plan.items() if organ in organs]
        assert len(tested) == min(2, len(labelling)) and set(tested) <= set(labelling)
    most = max(len(ds.labeled_organs(c)) for c in ds.training_ids)
    assert len(ds.labeled_organs(next(iter(plan)))) == most
    assert trust_plan(ds, ds.training_ids[:1], 5) == {ds.training_ids[0]: sorted(ds.labeled_organs(ds.training_ids[0]))}


def test_untrusted_organs_get_no_pseudo_label_and_the_test_is_stored(simulated, tmp_path):
    ds = simulated
    blind = ds.organ_ids[0]
    out = tmp_path / "run"
    run_round(ds, StandInSpecialist(ds), OrganBlindGeneralist(ds, {blind}), out, 1, RefineSettings(trust_cases=2))
    status = json.loads((out / "rounds/1/pseudo_status.json").read_text())
    trust = status["trust"]["organs"]
    assert status["settings"]["trust_cases"] == 2 and status["trust"]["seconds"] > 0
    assert trust[str(blind)]["trusted"] is False and trust[str(blind)]["generalist_dice"] < trust[str(blind)]["specialist_dice"]
    for organ in ds.organ_ids[1:]:
        labelling = sum(organ in ds.labeled_organs(c) for c in ds.training_ids)
        assert trust[str(organ)]["trusted"] is True and trust[str(organ)]["cases"] == min(2, labelling) > 0
        assert trust[str(organ)]["generalist_dice"] == pytest.approx(1.0)
    outcomes = [(int(o), e) for c in status["cases"].values() for o, e in c["organs"].items()]
    assert any(o == blind for o, _ in outcomes) and any(o != blind for o, _ in outcomes)
    for organ, entry in outcomes:
        if organ == blind:
            assert entry["status"] == REJECTED and "not trusted" in entry["reason"] and not entry["pseudo_label"]
        else:
            assert entry["status"] == ACCEPTED
    assert not (out / "rounds/.1.ipnp-incomplete").exists()


def test_with_trust_cases_0_every_organ_is_pseudo_labelled(simulated, tmp_path):
    ds = simulated
    run_round(ds, StandInSpecialist(ds), OrganBlindGeneralist(ds, {ds.organ_ids[0]}), tmp_path / "run", 1,
              RefineSettings(trust_cases=0))
    status = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())
    assert "trust" not in status
    assert all(e["status"] == ACCEPTED for c in status["cases"].values() for e in c["organs"].values())


def test_each_case_is_predicted_once_and_a_resumed_round_does_not_predict_a_tested_case_again(simulated, tmp_path):
    ds = simulated
    settings = RefineSettings(trust_cases=1)
    plan = list(trust_plan(ds, ds.training_ids, 1))

    class Crashing(StandInSpecialist):
        calls = 0

        def predict(self, image, geometry):
            Crashing.calls += 1
            if Crashing.calls > len(plan):  # the trust test is done; the round's first other case crashes
                raise KeyboardInterrupt
            return super().predict(image, geometry)

    with pytest.raises(KeyboardInterrupt):
        run_round(ds, Crashing(ds), BoxGeneralist(), tmp_path / "run", 1, settings)
    waiting = tmp_path / "run/rounds/.1.ipnp-incomplete/candidates"
    assert sorted(p.stem for p in waiting.glob("*.npz")) == sorted(plan)
    assert sorted(p.stem for p in (waiting.parent / "done").glob("*.json")) == sorted(plan)  # decided from storage

    class Counting(StandInSpecialist):
        predicted = []

        def predict(self, image, geometry):
            Counting.predicted.append(self.case_of_image[image.tobytes()])
            return super().predict(image, geometry)

    run_round(ds, Counting(ds), BoxGeneralist(), tmp_path / "run", 1, settings)
    assert Counting.predicted == [c for c in ds.training_ids if c not in plan and ds.case(c).unknown]
    reference = run_round(ds, StandInSpecialist(ds), BoxGeneralist(), tmp_path / "uninterrupted", 1, settings)
    resumed = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())
    uninterrupted = json.loads((reference / "pseudo_status.json").read_text())
    for status in (resumed, uninterrupted):
        status["trust"].pop("seconds")
        status.pop("specialist")
        for entry in status["cases"].values():
            entry.pop("seconds")
    assert resumed == uninterrupted


def test_an_organ_without_samples_is_trusted():
    assert OrganTrust(0, None, None, None, min_precision=0.9).trusted
    assert not OrganTrust(3, 0.5, 0.6, 1.0).trusted and OrganTrust(3, 0.6, 0.6, 0.0).trusted
    assert "Dice 0.500 against the specialist's 0.600 on 3 labelled cases" in OrganTrust(3, 0.5, 0.6, 1.0).refusal()
    imprecise = OrganTrust(3, 0.7, 0.6, 0.8, min_precision=0.9)
    assert not imprecise.trusted and "precision 0.800 below 0.90 on 3 labelled cases" in imprecise.refusal()


def test_samples_stored_without_the_specialists_precision_still_decide():
    # An unfinished round stored by an earlier version resumes: its samples lack the fourth value.
    old, new = {1: (0.7, 0.6, 0.8)}, {1: (0.5, 0.6, 0.6, 0.9)}
    [trust] = organ_trust([old], [1], min_precision=0.75).values()
    assert trust.trusted and trust.specialist_precision is None and trust.generalist_precision == pytest.approx(0.8)
    [mixed] = organ_trust([old, new], [1]).values()
    assert mixed.cases == 2 and mixed.generalist_dice == pytest.approx(0.6) and mixed.specialist_precision is None


class SwellingSpecialist(StandInSpecialist):
    """Predicts the complete label, but ``organ`` grown into the background around it by ``grow`` voxels."""

    def __init__(self, dataset, organ, grow=2):
        super().__init__(dataset)
        for labels in self.full.values():
            swollen = ndimage.binary_dilation(labels == organ, iterations=grow) & (labels == 0)
            labels[swollen] = organ


@pytest.mark.parametrize("min_precision", [0.0, 0.9])
def test_an_organ_whose_refined_masks_are_imprecise_is_trusted_only_below_the_precision_floor(simulated, tmp_path,
                                                                                              min_precision):
    # The generalist answers the whole ROI, so refinement keeps the specialist's swollen mask: as good as the
    # specialist's own by Dice, but about half of it lies on background.
    ds = simulated
    swollen = ds.organ_ids[0]
    specialist = SwellingSpecialist(ds, swollen)
    out = run_round(ds, specialist, BoxGeneralist(), tmp_path / "run", 1,
                    RefineSettings(trust_cases=2, trust_precision=min_precision))
    trust = json.loads((out / "pseudo_status.json").read_text())["trust"]["organs"]
    imprecise = trust[str(swollen)]
    tested = [c for c, organs in trust_plan(ds, ds.training_ids, 2).items() if swollen in organs]
    expected = np.mean([(ds.case(c).load_full_label()[0] == swollen).sum() / (specialist.full[c] == swollen).sum()
                        for c in tested])
    assert imprecise["cases"] == len(tested) and expected < 0.9
    assert imprecise["generalist_precision"] == pytest.approx(expected)
    assert imprecise["generalist_dice"] == pytest.approx(imprecise["specialist_dice"])
    # The specialist's own mask is the swollen one, so its precision is the same, and recorded beside it.
    assert imprecise["specialist_precision"] == pytest.approx(expected)
    assert imprecise["trusted"] is (min_precision == 0.0)
    for organ in ds.organ_ids[1:]:
        assert trust[str(organ)]["generalist_precision"] == pytest.approx(1.0) and trust[str(organ)]["trusted"]
        assert trust[str(organ)]["specialist_precision"] == pytest.approx(1.0)


def test_the_report_shows_the_trust_test_per_organ_and_round(simulated, tmp_path):
    import yaml

    from ipnp.report import write_report

    ds = simulated
    blind = ds.organ_ids[0]
    out = tmp_path / "run"
    out.mkdir()
    config = {"dataset": str(ds.root), "rounds": {"epochs": [5]}, "refine": {"trust_cases": 2}, "profile": "tiny", "epochs": 10}
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    run_round(ds, StandInSpecialist(ds), OrganBlindGeneralist(ds, {blind}), out, 1, RefineSettings(trust_cases=2))
    trust = json.loads((out / "rounds/1/pseudo_status.json").read_text())["trust"]["organs"]
    report = write_report(out).read_text()
    table = report.split("Trust test (`refine.trust_cases`)")[1].split("\n\n")[1]
    for organ in ds.organ_ids:
        t = trust[str(organ)]
        cell = (f"{100 * t['generalist_dice']:.1f} / {100 * t['specialist_dice']:.1f}, precision "
                f"{100 * t['generalist_precision']:.1f} / {100 * t['specialist_precision']:.1f} ({t['cases']})")
        [row] = [line for line in table.splitlines() if line.startswith(f"| {organ} | ")]
        assert row.split("|")[3].strip() == (cell if organ != blind else f"**not trusted** {cell}")
    assert "| 1 | rejected | generalist not trusted on this organ" in report


def test_a_generalist_that_fails_on_labelled_cases_is_not_trusted(simulated, tmp_path):
    ds = simulated
    failing = BoxGeneralist(fail=range(10_000))
    run_round(ds, StandInSpecialist(ds), failing, tmp_path / "run", 1, RefineSettings(trust_cases=2))
    status = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())
    trust = status["trust"]["organs"]
    assert all(t["cases"] and t["generalist_dice"] == 0 and not t["trusted"] for t in trust.values())
    plan = trust_plan(ds, ds.training_ids, 2)
    # The tested cases' unknown organs are prompted before the test decides; no other case costs a call.
    tested = sum(t["cases"] for t in trust.values())
    assert len(failing.calls) == tested + sum(len(ds.case(c).unknown) for c in plan)
    assert set(plan) != set(ds.training_ids)
    assert all("not trusted" in e["reason"] for c in status["cases"].values() for e in c["organs"].values())
