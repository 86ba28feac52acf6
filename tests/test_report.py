"""The run report (ipnp.report) and the paper's Table 1 layout (ipnp.evaluation.table)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from matplotlib.image import imread

from conftest import make_dataset, write_volume
from ipnp.data import PartialDataset
from ipnp.data.partial import simulate_partial_labels
from ipnp.errors import IpnpError
from ipnp.evaluation import evaluate_folders
from ipnp.evaluation.table import MISSING, build_table
from ipnp.pseudo.refine import RefineSettings
from ipnp.pseudo.round import run_round
import ipnp.report
from ipnp.report import DICE_FIGURE, TEST_FIGURE, TRAINING_FIGURE, write_report
from test_pseudo import BoxGeneralist, StandInSpecialist

CONFIG = {
    "dataset": None,  # filled in by the fixture
    "rounds": {"epochs": [5, 10, 15], "gate_from_round": 2},
    "refine": {"padding": 6, "tau": 0.4, "delta": 3, "trust_cases": 0},
    "vls": True,
    "profile": "tiny",
    "epochs": 20,
    "generalist": {"name": "classical"},
}


def _section(text: str, heading: str) -> str:
    """The part of the report under the ``## `` heading that starts with ``heading``."""
    parts = [part for part in text.split("\n## ") if part.startswith(heading)]
    assert len(parts) == 1, heading
    return parts[0]


def _row(text: str, first_cells: str) -> list[str]:
    """The cells of the markdown table row that starts with ``first_cells``."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cells} |")]
    assert len(rows) == 1, (first_cells, rows)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


# --- Table 1 layout --------------------------------------------------------------------------------

def _summary(organs: dict, cases: int) -> dict:
    scored = [o for o in organs.values() if o["n"]]
    return {
        "mean_dsc": float(np.mean([o["dsc"] for o in scored])),
        "mean_hd95": float(np.mean([o["hd95"] for o in scored])),
        "cases": cases,
        "organs": organs,
    }


def test_table_with_a_column_that_lacks_an_organ():
    a = _summary({"liver": {"id": 1, "dsc": 0.91234, "hd95": 3.5, "n": 4},
                  "spleen": {"id": 2, "dsc": 0.8, "hd95": 7.25, "n": 3}}, cases=4)
    b = _summary({"kidney": {"id": 3, "dsc": 0.5, "hd95": 20.0, "n": 2},
                  "liver": {"id": 1, "dsc": 0.7, "hd95": 9.0, "n": 4}}, cases=4)
    table = build_table([("A", a), ("B", b)])
    assert [row.organ_id for row in table.rows] == [1, 2, 3, None]  # by label id, then Average
    text = table.markdown()
    assert _row(text, "1") == ["1", "liver", "4", "91.23", "3.50", "70.00", "9.00"]
    assert _row(text, "2") == ["2", "spleen", f"3/{MISSING}", "80.00", "7.25", MISSING, MISSING]
    assert _row(text, "3")[3:] == [MISSING, MISSING, "50.00", "20.00"]
    average = _row(text, "")
    assert average[1] == "**Average**" and average[2] == "2"  # two organs averaged in each column
    assert average[3:] == [f"{100 * a['mean_dsc']:.2f}", f"{a['mean_hd95']:.2f}", f"{100 * b['mean_dsc']:.2f}",
                           f"{b['mean_hd95']:.2f}"]
    header, rows = table.csv()
    assert header[2:5] == ["A DSC (%)", "A HD95 (mm)", "A n"] and len(rows) == 4
    assert rows[1][5:] == ["", "", ""]  # spleen is not in B
    assert rows[0][2] == pytest.approx(91.234)
    records = json.loads(json.dumps(table.records()))
    assert records[2]["columns"]["A"] == {"dsc": None, "hd95": None, "n": None}
    assert records[3]["columns"]["B"]["dsc"] == pytest.approx(100 * b["mean_dsc"])
    with pytest.raises(ValueError, match="differ"):
        build_table([("A", a), ("A", b)])


# --- the report of a run ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with three rounds (the second one gated and rejecting everything), predictions and evaluation."""
    tmp = tmp_path_factory.mktemp("report")
    src = make_dataset(tmp / "full", n_train=6, n_test=3, shape=(12, 16, 18), seed=3)
    simulate_partial_labels(src, tmp / "partial", keep=0.34, seed=0)
    ds = PartialDataset(tmp / "partial")
    out = tmp / "run"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({**CONFIG, "dataset": str(ds.root)}, sort_keys=False))
    # Round 1: the specialist misses the lowest slice of the kidney (3 slices thick): Dice 80 % for it.
    specialist = StandInSpecialist(ds, confidence=0.8)
    specialist.full = {c: _trim(v, 3) for c, v in specialist.full.items()}
    paper = RefineSettings(trust_cases=0)  # the generalist that fails its first call is for round 1's own cases
    run_round(ds, specialist, BoxGeneralist(fail={0}), out, 1, paper)
    run_round(ds, StandInSpecialist(ds, confidence=0.6), BoxGeneralist(), out, 2, paper, gate_active=True)
    # Round 3: a specialist that misses one organ of every case: skipped, the round-1 pseudo-label carried on.
    specialist = StandInSpecialist(ds, confidence=0.95)
    specialist.full = {c: np.where(v == 2, 0, v) for c, v in specialist.full.items()}
    run_round(ds, specialist, BoxGeneralist(), out, 3, paper, gate_active=True)
    predictions = out / "predictions"
    shutil.copytree(ds.root / "labelsTs", predictions)
    reference, _ = ds.case("case_006", "test").load_label()
    write_volume(np.where(reference == 1, 0, reference).astype(np.uint8), predictions / "case_006.nii.gz")  # liver missed
    evaluate_folders(predictions, ds.root / "labelsTs", out / "evaluation", labels=ds.root / "dataset.json")
    return out


def _trim(label: np.ndarray, organ: int) -> np.ndarray:
    """The label without the organ's lowest axial slice."""
    lowest = np.flatnonzero((label == organ).any(axis=(1, 2)))[0]
    trimmed = label.copy()
    trimmed[lowest][trimmed[lowest] == organ] = 0
    return trimmed


def _statuses(run) -> dict[int, dict]:
    return {k: json.loads((run / "rounds" / str(k) / "pseudo_status.json").read_text()) for k in (1, 2, 3)}


def test_report_table_matches_the_evaluation(run):
    report = write_report(run).read_text()
    text = _section(report, "Test-set")
    summary = json.loads((run / "evaluation/summary.json").read_text())
    assert summary["organs"]["liver"]["dsc"] < 1  # the fixture spoiled liver in one prediction
    for name, organ in summary["organs"].items():
        assert _row(text, str(organ["id"])) == [str(organ["id"]), name, str(organ["n"]), f"{100 * organ['dsc']:.2f}",
                                                 f"{organ['hd95']:.2f}"]
    average = _row(text, "")
    assert average[3:] == [f"{100 * summary['mean_dsc']:.2f}", f"{summary['mean_hd95']:.2f}"]
    settings = yaml.safe_load((run / "config.yaml").read_text())
    assert f"| `dataset` | {settings['dataset']} |" in report
    assert "| `rounds.epochs` | [5, 10, 15] |" in report and "| `vls` | true |" in report
    for key in ("rounds.gate_from_round", "refine.padding", "refine.tau", "refine.delta", "profile", "epochs",
                "generalist.name"):
        assert f"| `{key}` |" in report


def test_report_rounds_match_the_status_files(run):
    text = _section(write_report(run).read_text(), "Pseudo-labels per round")
    rounds, organs = text.split("Per organ:")
    means = {}
    for k, status in _statuses(run).items():
        outcomes = [o for case in status["cases"].values() for o in case["organs"].values()]
        counts = [sum(o["status"] == s for o in outcomes) for s in ("accepted", "rejected", "skipped")]
        carried = [o for o in outcomes if o["pseudo_label"]]
        dice = means[k] = np.mean([100 * o["dice"] for o in carried])
        cells = _row(rounds, f"{k} | {CONFIG['rounds']['epochs'][k - 1]}")
        assert cells[2] == ("on" if k > 1 else "off")
        assert cells[3:8] == [*map(str, counts), str(len(carried)), f"{dice:.2f}"]
        accepted = [(100 * o["dice"], 100 * o["specialist_dice"]) for o in outcomes if o["status"] == "accepted"]
        assert cells[8] == (" / ".join(f"{np.mean(d):.2f}" for d in zip(*accepted)) if accepted else "–")
        organ_cells = {}
        for o_id in {int(o) for case in status["cases"].values() for o, v in case["organs"].items() if v["pseudo_label"]}:
            entries = [case["organs"][str(o_id)] for case in status["cases"].values()
                       if case["organs"].get(str(o_id), {}).get("pseudo_label")]
            # A carried label keeps the Dice and precision it had: both are recorded for every carried label here.
            dice_cell, precision_cell = (np.mean([100 * e[key] for e in entries]) for key in ("dice", "precision"))
            organ_cells[o_id] = f"{dice_cell:.2f} / {precision_cell:.2f} ({len(entries)})"
        for o_id, expected in organ_cells.items():
            assert _row(organs.split("Size:")[0], str(o_id))[1 + k] == expected
    assert means[1] < means[3] == 100  # round 3 replaced the trimmed kidneys: the numbers can tell rounds apart
    # Every round's distinct reasons: the failing generalist, the entropy gate, the organ not predicted.
    assert "| 1 | rejected | generalist failed: RuntimeError: server dropped the connection | 1 |" in text
    gate = _statuses(run)[2]["counts"]["rejected"]
    assert f"| 2 | rejected | mean entropy … did not fall below …; previous pseudo-label kept | {gate} |" in text
    assert "| 3 | skipped | the specialist predicts no voxel of this organ" in text


def _volumes_ml(path) -> dict[int, float]:
    """Each organ's volume (mL) in a label file, from its header's spacing."""
    image = sitk.ReadImage(str(path))
    counts = np.bincount(sitk.GetArrayFromImage(image).ravel())
    return {o: n * np.prod(image.GetSpacing()) / 1000 for o, n in enumerate(counts) if o and n}


def test_report_sizes_match_the_label_files(run):
    """The size table, recomputed from the label files alone: the dataset's true labels and each round's merged labels."""
    text = _section(write_report(run).read_text(), "Pseudo-labels per round").split("Size:")[1].split("\n\n", 2)[1]
    ds = PartialDataset(yaml.safe_load((run / "config.yaml").read_text())["dataset"])
    truth: dict[int, list[float]] = {}
    for case_id in ds.training_ids:
        for organ, ml in _volumes_ml(ds.case(case_id).label_path).items():
            truth.setdefault(organ, []).append(ml)
    carried: dict[int, dict[int, list[float]]] = {}
    for k, status in _statuses(run).items():
        for case_id, entry in status["cases"].items():
            merged = _volumes_ml(run / "rounds" / str(k) / "labels" / f"{case_id}.nii.gz")
            for organ, outcome in entry["organs"].items():
                if outcome["pseudo_label"]:
                    carried.setdefault(int(organ), {}).setdefault(k, []).append(merged.get(int(organ), 0.0))
    assert carried and len({len(v) for v in truth.values()}) > 1  # organs are labelled in different numbers of cases
    for organ, rounds in carried.items():
        cells = _row(text, str(organ))
        assert cells[2] == f"{np.median(truth[organ]):.2f} ({len(truth[organ])})"
        for k in (1, 2, 3):
            found = rounds.get(k)
            assert cells[2 + k] == ("–" if found is None else
                                    f"{np.median(found):.2f}, × {np.median(found) / np.median(truth[organ]):.2f} ({len(found)})")


def test_size_table_takes_each_cases_voxel_volume_and_medians():
    """Cases of different spacing: a pseudo-label's volume is its voxels times its own case's voxel volume."""
    def case(voxel_ml, pseudo_voxels, labelled_ml):
        outcome = {"status": "accepted", "reason": "", "voxels": pseudo_voxels, "pseudo_label": True, "dice": None}
        return {"organs": {"2": outcome}, "voxel_ml": voxel_ml, "labelled_ml": labelled_ml}

    status = {"counts": {"accepted": 3, "rejected": 0, "skipped": 0},
              "cases": {"a": case(0.001, 1000, {"1": 4.0}), "b": case(0.008, 100, {"1": 5.0, "2": 1.0}),
                        "c": case(0.027, 1000, {"2": 0.5}), "d": {"organs": {}, "labelled_ml": {"2": 0.6}}}}
    summary = ipnp.report.summarize_round(1, status)
    assert summary.organ_ml == {2: [1.0, 0.8, 27.0]} and summary.labelled_ml == {1: [4.0, 5.0], 2: [1.0, 0.5, 0.6]}
    run = ipnp.report._Run(Path("."), None, None, "", [summary], {1: status}, None, {2: "spleen"})
    table = "\n".join(ipnp.report._organ_size(run))
    assert _row(table, "2") == ["2", "spleen", "0.60 (3)", "1.00, × 1.67 (3)"]  # medians, not means (9.6 mL)


def test_report_figures_are_linked_images_and_the_report_is_stable(run):
    path = write_report(run)
    first = path.read_text()
    for name in (DICE_FIGURE, TRAINING_FIGURE, TEST_FIGURE):
        figure = run / "figures" / name
        assert f"](figures/{name})" in first
        assert figure.stat().st_size < 1_000_000
        pixels = imread(figure)
        assert pixels.shape[0] >= 200 and pixels.shape[1] >= 300 and pixels.std() > 0.01
    training = imread(run / "figures" / TRAINING_FIGURE)
    assert training.shape[1] > 6 * 200  # image, full, partial and three rounds side by side
    before = {p.name: p.read_bytes() for p in (run / "figures").iterdir()}
    assert write_report(run).read_text() == first
    assert {p.name: p.read_bytes() for p in (run / "figures").iterdir()} == before
    assert not list(run.rglob(".ipnp-tmp"))


def test_a_figure_too_large_is_written_at_a_lower_resolution(run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    width = imread(copy / "figures" / TRAINING_FIGURE).shape[1]
    monkeypatch.setattr(ipnp.report, "MAX_FIGURE_BYTES", (copy / "figures" / TRAINING_FIGURE).stat().st_size - 1)
    write_report(copy)
    assert imread(copy / "figures" / TRAINING_FIGURE).shape[1] < width


def test_report_of_a_run_that_has_only_started(run, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(run / "config.yaml", started / "config.yaml")
    text = write_report(started).read_text()
    assert "rounds finished: 0 of 3 planned" in text
    assert "No pseudo-labeling round has finished yet" in text
    assert "No evaluation yet" in text and "no predictions of the test images yet" in text
    assert "there are no pseudo-labels yet" in text  # the training figure shows partial and full labels only
    assert (started / "figures" / TRAINING_FIGURE).is_file()
    assert not (started / "figures" / DICE_FIGURE).exists()


def test_report_of_an_empty_folder_says_what_is_missing(tmp_path):
    text = write_report(tmp_path).read_text()
    assert "No `config.yaml`" in text and "Dataset unavailable" in text
    assert "No pseudo-labeling round" in text and "No evaluation yet" in text
    assert not list((tmp_path / "figures").iterdir())
    with pytest.raises(IpnpError, match="run folder not found"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "config.yaml").write_text("dataset: [unclosed")
    with pytest.raises(IpnpError, match="config.yaml: not valid YAML"):
        write_report(tmp_path)
