"""`ipnp run` killed with SIGKILL at every stage resumes to a valid result; a full disk is one clear line.

One chain keeps this fast: a real run (a child process, tiny profile, stand-in generalist) is killed the
moment the file system shows that it has reached a stage, resumed, killed at the next stage, and so on.
The whole process group is killed, as a scheduler or a closed terminal would, so that nnU-Net's worker
processes die with the run.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from conftest import tree_digest
from ipnp.data import PartialDataset
from ipnp.data.dataset import read_label
from ipnp.data.partial import simulate_partial_labels
from ipnp.data.synth import synthesize_dataset
from ipnp.specialist.prepare import DATASET_NAME, PLANS
from test_loop import write_config

TESTS = Path(__file__).parent

# The run as `ipnp run` runs it, with the stand-in generalist passed to run_ipnp, on a slow disk: the
# latest training checkpoint stays half written for a second, export pauses after each image and the report
# after creating its figures folder, so that the test can catch each of them in the middle.
# DISK_FULL_AT=n makes the n-th image write of the export fail as on a full disk.
DRIVER = f"""
import errno, functools, io, os, sys, time
import torch
sys.path.insert(0, {str(TESTS)!r})
import ipnp.loop, ipnp.report
from ipnp.cli import main
from test_pseudo import BoxGeneralist

save = torch.save

def slow_checkpoint_save(obj, f, *args, **kwargs):
    if "checkpoint_latest" not in str(f):
        return save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    with open(f, "wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
        time.sleep(1.0)
        out.write(data[len(data) // 2 :])

def pause_after(step, seconds):
    def wrapper(*args, **kwargs):
        result = step(*args, **kwargs)
        time.sleep(seconds)
        return result
    return wrapper

def disk_full_at(n, write):
    calls = []
    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(*args, **kwargs)
    return wrapper

if __name__ == "__main__":  # nnU-Net's worker processes import this file again
    ipnp.loop.run_ipnp = functools.partial(ipnp.loop.run_ipnp, generalist=BoxGeneralist())
    torch.save = slow_checkpoint_save
    write = disk_full_at(int(os.environ.get("DISK_FULL_AT", 0)), ipnp.loop.write_image)
    ipnp.loop.write_image = pause_after(write, 0.2)
    ipnp.report.ensure_dir = pause_after(ipnp.report.ensure_dir, 1.0)
    sys.exit(main(sys.argv[1:]))
"""

# Four epochs, so that the marginal segment [0, 2) saves a checkpoint_latest before its final one.
CONFIG = {"profile": "tiny", "epochs": 4, "iterations_per_epoch": 2, "device": "cpu",
          "rounds": {"epochs": [2, 3], "gate_from_round": 2}}
STEP_TIMEOUT_S = 240


class Run:
    """The run folder of one chained test, and the commands that act on it."""

    def __init__(self, tmp_path: Path) -> None:
        # Half-size phantoms keep every stage short; seed 5 labels every organ in some case, as in test_loop.
        synthesize_dataset(tmp_path / "full", n_train=6, n_test=1, seed=1, shape=(32, 48, 48))
        simulate_partial_labels(tmp_path / "full", tmp_path / "partial", keep=0.33, seed=5)
        self.dataset = tmp_path / "partial"
        self.dir = tmp_path / "run"
        self.driver = tmp_path / "driver.py"
        self.driver.write_text(DRIVER)
        self.config = write_config(tmp_path / "run.yaml", CONFIG)
        self.log = tmp_path / "driver.log"
        self.started = False

    def _command(self) -> list[str]:
        tail = ["--resume"] if self.started else ["--config", str(self.config)]
        self.started = True
        return [sys.executable, str(self.driver), "run", str(self.dataset), "--out", str(self.dir), *tail]

    def kill_when(self, reached: Callable[[], bool]) -> None:
        """Start (or resume) the run and SIGKILL it as soon as ``reached()`` is true."""
        with open(self.log, "ab") as log:
            process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        try:
            while not _safely(reached):
                assert process.poll() is None, f"the run ended (exit {process.returncode}) before the point:\n{self.tail()}"
                assert time.monotonic() < deadline, f"point not reached in {STEP_TIMEOUT_S} s:\n{self.tail()}"
                time.sleep(0.02)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def finish(self, **env: str) -> subprocess.CompletedProcess:
        """Resume the run and let it end by itself."""
        return subprocess.run(self._command(), capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
                              env={**os.environ, **env})

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.is_file() else ""

    def any_file(self, folder: str, pattern: str) -> bool:
        return any(self.dir.glob(f"{folder}/{pattern}"))


def _safely(reached: Callable[[], bool]) -> bool:
    try:
        return reached()
    except FileNotFoundError:  # a folder renamed or removed while it was listed
        return False


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ipnp: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_sigkill_at_every_stage_then_resume_completes(tmp_path):
    run = Run(tmp_path)
    before = tree_digest(run.dataset)
    preprocessed = f"specialist/nnunet/preprocessed/{DATASET_NAME}/{PLANS}_3d_fullres"
    marginal = f"specialist/nnunet/results/{DATASET_NAME}/nnUNetTrainer_ipnpMarginal__*/fold_all"

    # 1. preprocessing: nnU-Net has written the first preprocessed case, training has not begun.
    run.kill_when(lambda: run.any_file(preprocessed, "*.b2nd"))
    assert not run.any_file(marginal, "checkpoint_*.pth")

    # 2. training, while the first checkpoint is being written (under whatever name it is written).
    run.kill_when(lambda: run.any_file(marginal, "**/*checkpoint_latest.pth*"))
    assert not run.any_file(marginal, "checkpoint_final.pth")

    # 3. training: the marginal segment's first epoch is checkpointed, the segment is not finished.
    run.kill_when(lambda: run.any_file(marginal, "checkpoint_latest.pth"))
    assert not run.any_file(marginal, "checkpoint_final.pth")

    # 4. pseudo-labeling: round 1 is complete, round 2 has written a case inside its hidden folder.
    run.kill_when(lambda: run.any_file("rounds/.2.ipnp-incomplete", "**/*.nii.gz"))
    assert not (run.dir / "rounds" / "2").exists()
    round_1 = _mtimes(run.dir / "rounds" / "1")
    assert round_1

    # 5. export: the completed dataset is half written under its hidden name.
    run.kill_when(lambda: run.any_file(".completed.ipnp-incomplete/labelsTr", "*.nii.gz"))
    assert not (run.dir / "completed").exists()
    finished = {k: _mtimes(run.dir / k) for k in ("rounds", "specialist/nnunet/results")}

    # A full disk during export: one line naming the run and the stage; what was finished stays usable.
    failed = run.finish(DISK_FULL_AT="3")
    assert failed.returncode == 2, failed.stderr[-3000:]
    line = _one_error_line(failed.stderr)
    assert str(run.dir) in line and "export" in line and os.strerror(errno.ENOSPC) in line, line
    assert not (run.dir / "completed").exists() and not (run.dir / ".completed.ipnp-incomplete").exists()

    # 6. report: its figures folder exists, report.md does not yet.
    run.kill_when(lambda: (run.dir / "figures").is_dir())
    assert not (run.dir / "report.md").exists()

    done = run.finish()
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_valid_result(run.dir, run.dataset)
    assert _mtimes(run.dir / "rounds" / "1") == round_1  # the completed round was not redone
    assert {k: _mtimes(run.dir / k) for k in finished} == finished  # nor any finished training or round
    assert tree_digest(run.dataset) == before


def _assert_valid_result(run_dir: Path, dataset: Path) -> None:
    import torch

    ds = PartialDataset(dataset)
    completed = PartialDataset(run_dir / "completed")
    assert completed.training_ids == ds.training_ids
    for case in ds.cases():
        truth, _ = case.load_label()
        merged, _ = read_label(run_dir / "completed" / "labelsTr" / f"{case.case_id}.nii.gz")
        assert np.array_equal(merged[truth > 0], truth[truth > 0])
        assert (run_dir / "completed" / "sources" / f"{case.case_id}.nii.gz").is_file()
    summary = json.loads((run_dir / "evaluation" / "summary.json").read_text())
    assert 0.0 <= summary["mean_dsc"] <= 1.0
    assert (run_dir / "report.md").is_file()
    for k in (1, 2):
        assert json.loads((run_dir / "rounds" / str(k) / "pseudo_status.json").read_text())["round"] == k
    # One schedule, each epoch trained once: a killed epoch was redone from the checkpoint, not appended.
    record = json.loads((run_dir / "specialist" / "specialist.json").read_text())
    final = torch.load(run_dir / "specialist" / record["model_dir"] / "fold_all" / "checkpoint_final.pth",
                       map_location="cpu", weights_only=False)
    assert final["current_epoch"] == CONFIG["epochs"] and len(final["logging"]["train_losses"]) == CONFIG["epochs"]
    assert not list(run_dir.rglob("*.ipnp-incomplete"))
