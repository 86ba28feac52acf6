"""Bad settings and a bad environment, through the CLI: each is one line naming the file and the problem.

tests/test_validate.py covers broken datasets; this file covers what surrounds them: the run config, the
output folder, the generalist's weights or server, a run folder in use, a full disk. For every kind the
command exits 2 with exactly one `ipnp: error:` line, prints no traceback, and leaves the input unchanged.
"""

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_dataset, tree_digest
from ipnp.cli import main
from ipnp.data import PartialDataset
from ipnp.data.partial import simulate_partial_labels
from ipnp.pseudo.refine import RefineSettings
from ipnp.pseudo.round import ACCEPTED, REJECTED, run_round
from test_loop import TINY_RUN, write_config
from test_pseudo import BoxGeneralist, StandInSpecialist


def refused(argv: list[str], dataset: Path, capsys, *names: str) -> str:
    """Run the CLI and return its one error line, after checking everything every bad input must give."""
    before = tree_digest(dataset)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("ipnp: error:")]
    assert len(lines) == 1 and "Traceback" not in out + err, err
    for name in names:
        assert name in lines[0], lines[0]
    assert tree_digest(dataset) == before
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the run config --------------------------------------------------------------------------------

BAD_CONFIGS = {
    "unknown key": ({**TINY_RUN, "epoch": 3}, "epoch: unknown setting"),
    "unknown nested key": ({**TINY_RUN, "refine": {"taux": 0.3}}, "refine.taux: unknown setting"),
    "value out of range": ({**TINY_RUN, "refine": {"tau": 1.5}}, "refine.tau"),
    "zero epochs": ({**TINY_RUN, "epochs": 0}, "epochs: 0 must be at least 1"),
    "round after the last epoch": ({**TINY_RUN, "rounds": {"epochs": [1, 3]}}, "rounds: epochs [1, 3]"),
    "wrong type": ({**TINY_RUN, "vls": "yes"}, "vls: expected bool"),
    "bad device": ({**TINY_RUN, "generalist": {"device": "gpu"}}, "generalist.device: 'gpu' is not a device name"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CONFIGS))
def test_a_bad_config_names_the_file_and_the_key(dataset, tmp_path, capsys, kind):
    config, message = BAD_CONFIGS[kind]
    path = write_config(tmp_path / "run.yaml", config)
    refused(["run", str(dataset), "--out", str(tmp_path / "run"), "--config", str(path)], dataset, capsys,
            str(path), message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, message", [("epochs: [1\n", "not valid YAML"), (None, "cannot read the config")])
def test_an_unreadable_config_is_one_line(dataset, tmp_path, capsys, text, message):
    path = tmp_path / "run.yaml"
    if text is not None:
        path.write_text(text)
    refused(["run", str(dataset), "--out", str(tmp_path / "run"), "--config", str(path)], dataset, capsys,
            str(path), message)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu0"])
def test_a_bad_device_name_is_refused_before_any_work(dataset, tmp_path, capsys, device):
    # torch alone would reject it only when the first training starts, after a benchmark has written its folder.
    refused(["benchmark", str(dataset), "--out", str(tmp_path / "bench"), "--device", device], dataset, capsys,
            f"--device: '{device}' is not a device name")
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize("command", ["benchmark", "demo"])
def test_a_cuda_device_this_machine_lacks_is_refused_before_any_work(dataset, tmp_path, capsys, command):
    # cuda:99 is missing on a CPU machine and on any GPU machine alike; the demo would first synthesise phantoms.
    argv = {"benchmark": ["benchmark", str(dataset), "--out", str(tmp_path / "out")],
            "demo": ["demo", "--out", str(tmp_path / "out")]}[command]
    line = refused(argv + ["--device", "cuda:99"], dataset, capsys, "--device: 'cuda:99': ")
    assert "CUDA is not available" in line or "CUDA device(s)" in line, line
    assert not (tmp_path / "out").exists()


# --- the output folder -----------------------------------------------------------------------------

def _commands(dataset: Path, out: Path) -> dict[str, list[str]]:
    """Commands that write an output folder, each cheap to refuse."""
    return {
        "run": ["run", str(dataset), "--out", str(out)],
        "partial": ["partial", str(dataset), str(out)],
        "evaluate": ["evaluate", str(dataset / "labelsTs"), str(dataset / "labelsTs"), "--out", str(out)],
        "generalist-eval": ["generalist-eval", str(dataset), "--out", str(out), "--cases", "case_000"],
        "train": ["train", str(dataset), "--out", str(out), "--profile", "tiny", "--device", "cpu"],
    }


@pytest.mark.parametrize("command", sorted(_commands(Path(), Path())))
def test_an_output_folder_under_a_regular_file_is_one_line(dataset, tmp_path, capsys, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    refused(_commands(dataset, blocker / "out")[command], dataset, capsys, str(blocker))
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize("command", sorted(_commands(Path(), Path())))
def test_an_output_folder_in_a_read_only_folder_is_one_line(dataset, tmp_path, capsys, command):
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        probe = locked / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("this user (root) writes into read-only folders; the regular-file case covers it")
        refused(_commands(dataset, locked / "out")[command], dataset, capsys, str(locked))
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", sorted(_commands(Path(), Path())))
def test_an_output_folder_inside_the_input_dataset_is_refused(dataset, capsys, command):
    out = dataset / ("labelsTs/out" if command == "evaluate" else "out")  # evaluate's inputs are two folders
    refused(_commands(dataset, out)[command], dataset, capsys, str(out), "lie inside")
    assert not out.exists()


def test_a_full_disk_is_one_line_naming_the_output(dataset, tmp_path, capsys, monkeypatch):
    import ipnp.data.partial

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ipnp.data.partial, "write_image", disk_full)
    out = tmp_path / "out"
    refused(["partial", str(dataset), str(out)], dataset, capsys, str(out), os.strerror(errno.ENOSPC))
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # the half-built folder is removed

    assert main(["--debug", "partial", str(dataset), str(out)]) == 2
    assert "Traceback" in capsys.readouterr().err


def _limit_file_size() -> None:
    """In the child: any file write past 100 kB fails (EFBIG), as a write on a full disk does (ENOSPC)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))


def test_a_short_image_write_is_an_error_not_a_truncated_file(tmp_path):
    out = tmp_path / "phantoms"
    done = subprocess.run([sys.executable, "-m", "ipnp.cli", "synth", str(out), "--cases", "1", "--test-cases", "0"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=120)
    # SimpleITK's NIfTI writer reports a short write on stderr and returns; ipnp reads each image back.
    assert done.returncode == 2 and not out.exists(), f"exit {done.returncode}: {done.stderr[-500:]}"
    assert "could not be written completely" in done.stderr


# --- the generalist --------------------------------------------------------------------------------

def _weights(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / "nnInteractive_v1.0"
    if kind == "incomplete":
        folder.mkdir()
        (folder / "plans.json").write_text("{}")
    return folder


@pytest.mark.parametrize("kind, message", [("missing", "does not exist"), ("incomplete", "missing dataset.json")])
def test_missing_or_incomplete_weights_are_one_line(dataset, tmp_path, capsys, kind, message):
    weights = _weights(tmp_path, kind)
    options = ["--generalist", "nninteractive", "--model-dir", str(weights)]
    refused(["generalist-eval", str(dataset), "--out", str(tmp_path / "eval"), *options], dataset, capsys,
            str(weights), message)
    assert not (tmp_path / "eval").exists()


def test_a_run_checks_the_weights_before_training(dataset, tmp_path, capsys):
    weights = _weights(tmp_path, "incomplete")
    run = tmp_path / "run"
    start = time.monotonic()
    refused(["run", str(dataset), "--out", str(run), "--config", str(write_config(tmp_path / "run.yaml")),
             "--generalist", "nninteractive", "--model-dir", str(weights)], dataset, capsys, str(weights), "incomplete")
    assert time.monotonic() - start < 30  # refused up front, not after the first training segment
    assert not (run / "config.yaml").exists() and not (run / "specialist").exists()  # so it can start again


def test_an_unreachable_server_is_one_line_naming_the_url(dataset, tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    refused(["generalist-eval", str(dataset), "--out", str(tmp_path / "eval"), "--generalist", "nninteractive-remote",
             "--server-url", url], dataset, capsys, url, "cannot open a session")
    refused(["run", str(dataset), "--out", str(tmp_path / "run"), "--config", str(write_config(tmp_path / "run.yaml")),
             "--generalist", "nninteractive-remote", "--server-url", url], dataset, capsys, url)
    assert time.monotonic() - start < 30  # refused, not retried for minutes, and before any training
    assert not (tmp_path / "run" / "specialist").exists()


class EmptyGeneralist(BoxGeneralist):
    """Answers the first organ it is asked with an empty mask, and the others as BoxGeneralist does."""

    def segment(self, prompts):
        mask = super().segment(prompts)
        return np.zeros_like(mask) if len(self.calls) == 1 else mask


def test_an_empty_generalist_answer_rejects_only_that_organ_with_a_reason(tmp_path):
    make_dataset(tmp_path / "full", n_train=6, n_test=0, shape=(12, 16, 18), seed=3)
    simulate_partial_labels(tmp_path / "full", tmp_path / "partial", keep=0.34, seed=0)
    ds = PartialDataset(tmp_path / "partial")
    case_id = ds.training_ids[0]
    unknown = sorted(ds.case(case_id).unknown)
    run_round(ds, StandInSpecialist(ds), EmptyGeneralist(), tmp_path / "run", 1, RefineSettings(trust_cases=0), cases=[case_id])
    organs = json.loads((tmp_path / "run/rounds/1/pseudo_status.json").read_text())["cases"][case_id]["organs"]
    assert organs[str(unknown[0])]["status"] == REJECTED and "empty" in organs[str(unknown[0])]["reason"]
    assert all(organs[str(o)]["status"] == ACCEPTED for o in unknown[1:])


# --- the run folder --------------------------------------------------------------------------------

HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_a_run_folder_held_by_another_process_is_refused(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused(["run", str(dataset), "--out", str(run), "--config", str(write_config(tmp_path / "run.yaml"))],
                dataset, capsys, str(run), "another ipnp process is running in this folder")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the refused run wrote nothing
