"""IPnP end to end with the tiny profile: rounds, continued training, export, predictions, report, resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import tree_digest
from ipnp.cli import main
from ipnp.data import PartialDataset
from ipnp.data.dataset import read_label
from ipnp.data.partial import simulate_partial_labels
from ipnp.data.synth import synthesize_dataset
from ipnp.config import load_config
from ipnp.errors import IpnpError
from ipnp.loop import SOURCE_GROUND_TRUTH, SOURCE_PSEUDO, SOURCE_UNKNOWN, Timings, run_ipnp, source_map
from test_pseudo import BoxGeneralist

TINY_RUN = {
    "profile": "tiny", "epochs": 3, "iterations_per_epoch": 2, "device": "cpu",
    "rounds": {"epochs": [1, 2], "gate_from_round": 2},
}


def make_partial_phantoms(root: Path, n_train: int = 6, n_test: int = 2) -> Path:
    """Phantoms with 33 % of the organs kept; seed 5 labels every organ in some case at this size."""
    synthesize_dataset(root / "full", n_train=n_train, n_test=n_test, seed=1)
    simulate_partial_labels(root / "full", root / "partial", keep=0.33, seed=5)
    return root / "partial"


def write_config(path: Path, config: dict = TINY_RUN) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def partial(tmp_path_factory) -> Path:
    return make_partial_phantoms(tmp_path_factory.mktemp("loop"))


@pytest.fixture(scope="module")
def finished_run(partial, tmp_path_factory) -> Path:
    """A whole run with a stand-in generalist: the classical one takes seconds per organ on a loaded CPU."""
    root = tmp_path_factory.mktemp("run")
    before = tree_digest(partial)
    config = load_config(write_config(root / "run.yaml"))
    run_ipnp(partial, root / "run", config, generalist=BoxGeneralist())
    assert tree_digest(partial) == before  # the input dataset is never written
    return root / "run"


def test_rounds_run_on_schedule_and_training_continues(finished_run):
    import torch

    for k, gate in ((1, False), (2, True)):
        status = json.loads((finished_run / "rounds" / str(k) / "pseudo_status.json").read_text())
        assert status["round"] == k and status["entropy_gate"] is gate
    assert not (finished_run / "rounds" / "3").exists()
    record = json.loads((finished_run / "specialist" / "specialist.json").read_text())
    assert record["method"] == "ipnp" and record["labels"].endswith("rounds/2/labels")
    final = torch.load(finished_run / "specialist" / record["model_dir"] / "fold_all" / "checkpoint_final.pth",
                       map_location="cpu", weights_only=False)
    # One schedule: the last segment ends at epoch 3 and its log holds every epoch since the start.
    assert final["current_epoch"] == 3 and len(final["logging"]["train_losses"]) == 3
    marginal = next((finished_run / "specialist" / "nnunet" / "results").glob("*/nnUNetTrainer_ipnpMarginal__*"))
    first = torch.load(marginal / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert first["current_epoch"] == 1
    saved = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert saved["epochs"] == 3 and saved["rounds"]["epochs"] == [1, 2] and Path(saved["dataset"]).is_dir()


def test_completed_dataset_keeps_ground_truth_and_marks_sources(finished_run, partial):
    ds = PartialDataset(partial)
    completed = PartialDataset(finished_run / "completed")
    assert completed.training_ids == ds.training_ids
    last = json.loads((finished_run / "rounds" / "2" / "labels" / "pseudo_labels.json").read_text())
    for case in ds.cases():
        truth, _ = case.load_label()
        merged, _ = read_label(finished_run / "completed" / "labelsTr" / f"{case.case_id}.nii.gz")
        source, _ = read_label(finished_run / "completed" / "sources" / f"{case.case_id}.nii.gz")
        round_labels, _ = read_label(finished_run / "rounds" / "2" / "labels" / f"{case.case_id}.nii.gz")
        assert np.array_equal(merged, round_labels)
        assert np.array_equal(merged[truth > 0], truth[truth > 0])  # true labels are never changed
        assert np.array_equal(source == SOURCE_GROUND_TRUTH, truth > 0)  # 33 %: no case is fully labeled
        assert set(np.unique(merged[source == SOURCE_PSEUDO])) <= set(last[case.case_id])
    assert json.loads((finished_run / "completed" / "pseudo_labels.json").read_text()) == {c: last.get(c, []) for c in ds.training_ids}


def test_source_map_rules():
    truth = np.array([0, 1, 0, 0])
    merged = np.array([0, 1, 2, 0])
    assert source_map(truth, merged, fully_labeled=False).tolist() == [SOURCE_UNKNOWN, SOURCE_GROUND_TRUTH, SOURCE_PSEUDO, SOURCE_UNKNOWN]
    assert source_map(truth, truth, fully_labeled=True).tolist() == [SOURCE_GROUND_TRUTH] * 4


def test_timings_add_up_over_resumed_calls_and_count_stopped_stages(tmp_path, monkeypatch):
    clock = iter([0.0, 2.5, 10.0, 11.0, 20.0, 24.0])
    monkeypatch.setattr("ipnp.loop.time.perf_counter", lambda: next(clock))
    with Timings(tmp_path).stage("train 0"):
        pass
    with pytest.raises(KeyboardInterrupt), Timings(tmp_path).stage("train 1"):
        raise KeyboardInterrupt  # its finished epochs are resumed, so its time was the run's
    with pytest.raises(IpnpError, match=r"train 1 stopped: disk full \(x.pth\); the finished stages are kept"):
        with Timings(tmp_path).stage("train 1"):
            raise OSError(28, "disk full", "x.pth")
    assert json.loads((tmp_path / "timings.json").read_text()) == {"train 0": 2.5, "train 1": 5.0}


def test_predictions_evaluation_and_report(finished_run, partial):
    ds = PartialDataset(partial)
    assert sorted(p.name for p in (finished_run / "predictions").iterdir()) == [f"{c}.nii.gz" for c in ds.test_ids]
    summary = json.loads((finished_run / "evaluation" / "summary.json").read_text())
    assert summary["cases"] == len(ds.test_ids) and 0 <= summary["mean_dsc"] <= 1
    report = (finished_run / "report.md").read_text()
    assert "Average" in report and "figures/" in report
    timings = json.loads((finished_run / "timings.json").read_text())
    assert {"train 0", "round 1", "train 1", "round 2", "train 2", "export", "predict", "evaluate", "report"} <= set(timings)


def test_a_finished_run_is_not_redone_and_is_not_overwritten(finished_run, partial, capsys):
    before = tree_digest(finished_run / "completed")
    assert main(["run", str(partial), "--out", str(finished_run)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["run", str(partial), "--out", str(finished_run), "--resume"]) == 0
    assert "round 2:" in capsys.readouterr().out  # the one-screen summary
    starts = [line for line in (finished_run / "run.log").read_text().splitlines() if "IPnP on" in line]
    assert starts[0].endswith("(new run)") and starts[-1].endswith("(resumed)")
    assert tree_digest(finished_run / "completed") == before
    assert main(["run", str(partial), "--out", str(finished_run), "--resume", "--epochs", "5"]) == 2
    assert "differ from the run's saved config.yaml" in capsys.readouterr().err


def test_a_second_concurrent_run_is_refused(finished_run, partial, capsys):
    import fcntl

    with open(finished_run / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["run", str(partial), "--out", str(finished_run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "another ipnp process is running in this folder" in err and err.count("\n") == 1
