"""A pseudo-labeling round killed (SIGKILL) at any moment resumes: finished cases are not redone, no partly
written file is ever read, and ``rounds/<k>`` appears only when complete, equal to an uninterrupted round."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_dataset
from ipnp.data import PartialDataset
from ipnp.data.io import read_voxels
from ipnp.pseudo.refine import RefineSettings
from ipnp.pseudo.round import STATUS_FILE, run_round
from ipnp.pseudo.trust import trust_plan
from test_pseudo import BoxGeneralist, StandInSpecialist

TESTS = Path(__file__).parent

# Runs a round in a child process that kills itself with SIGKILL at a chosen point:
#   before N / after N: around the N-th os.replace (every atomic write, and the final rename, is one);
#   mid-write N: in the N-th image write, after half of the file was written to its temporary name.
CHILD = """
import os, signal, sys
import SimpleITK as sitk
from ipnp.data import PartialDataset
from ipnp.pseudo.round import run_round
from test_pseudo import BoxGeneralist, StandInSpecialist

root, out, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
calls = 0

def killing(original, before):
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == n and before:
            if mode == "mid-write":
                original(*args, **kwargs)
                with open(args[1], "r+b") as f:
                    f.truncate(os.path.getsize(args[1]) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper

if mode == "mid-write":
    sitk.WriteImage = killing(sitk.WriteImage, True)
else:
    os.replace = killing(os.replace, mode == "before")
dataset = PartialDataset(root)
run_round(dataset, StandInSpecialist(dataset), BoxGeneralist(), out, 1)
"""


class CountingSpecialist(StandInSpecialist):
    def __init__(self, dataset):
        super().__init__(dataset)
        self.predicted = []

    def predict(self, image, geometry):
        self.predicted.append(self.case_of_image[image.tobytes()])
        return super().predict(image, geometry)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ipnp.data.partial import simulate_partial_labels

    root = tmp_path_factory.mktemp("resume")
    make_dataset(root / "full", n_train=3, n_test=0, shape=(12, 16, 18), seed=5)
    simulate_partial_labels(root / "full", root / "partial", keep=0.67, seed=3)
    ds = PartialDataset(root / "partial")
    assert all(ds.case(c).unknown for c in ds.training_ids)  # every case needs a prediction
    return ds


def _snapshot(folder: Path) -> dict:
    """A round's labels (read strictly: a truncated file raises) and its status without timings."""
    status = json.loads((folder / STATUS_FILE).read_text())
    for entry in status["cases"].values():
        entry.pop("seconds")
    status["trust"].pop("seconds")
    files = {p.name: read_voxels(p).tolist() for p in (folder / "labels").glob("*.nii.gz")}
    return {"status": status, "files": files, "names": sorted(p.name for p in (folder / "labels").iterdir())}


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted round, and how many os.replace calls it makes."""
    out = tmp_path_factory.mktemp("reference")
    calls = []
    original = os.replace

    def counting(*args):
        calls.append(args)
        return original(*args)

    os.replace = counting
    try:
        folder = run_round(dataset, StandInSpecialist(dataset), BoxGeneralist(), out, 1)
    finally:
        os.replace = original
    return _snapshot(folder), len(calls)


def _killed(dataset, out: Path, mode: str, n: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    child = subprocess.run([sys.executable, "-c", CHILD, str(dataset.root), str(out), mode, str(n)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr[-2000:]  # it really was killed


def _kill_points(total: int) -> list[tuple[str, int]]:
    return [("before", n) for n in sorted({1, 2, 3, 4, total // 2, total - 1, total})] + [("after", total)]


def _trust_cases(dataset) -> list[str]:
    """The cases the default trust test predicts first, in order."""
    return list(trust_plan(dataset, dataset.training_ids, RefineSettings().trust_cases))


def test_a_killed_round_resumes_where_it_stopped(dataset, reference, tmp_path):
    expected, total = reference
    tested = _trust_cases(dataset)
    assert tested  # the default trust test runs, and its records are kill points too
    # round.json; a candidates record per tested case; label and record per case; manifest, status, rename
    assert total == 4 + len(tested) + 2 * len(dataset.training_ids)
    for mode, n in [*_kill_points(total), ("mid-write", 2)]:
        out = tmp_path / f"{mode}-{n}"
        _killed(dataset, out, mode, n)
        rounds = out / "rounds"
        complete = (rounds / "1").exists()
        assert complete == (mode == "after")  # the round's folder appears only when the round is complete
        work = rounds / ".1.ipnp-incomplete"
        done = {p.stem for p in (work / "done").glob("*.json")}
        waiting = {p.stem for p in (work / "candidates").glob("*.npz")}
        specialist = CountingSpecialist(dataset)
        folder = run_round(dataset, specialist, BoxGeneralist(), out, 1)
        others = [c for c in dataset.training_ids if c not in tested]
        unfinished = [] if complete else [c for c in tested if c not in waiting | done] + [c for c in others if c not in done]
        assert specialist.predicted == unfinished, (mode, n)  # finished cases and stored candidates are not redone
        assert [p.name for p in rounds.iterdir()] == ["1"]  # nothing unfinished is left behind
        assert _snapshot(folder) == expected, (mode, n)


def test_an_unfinished_round_with_other_settings_starts_over(dataset, reference, tmp_path):
    out = tmp_path / "run"
    _killed(dataset, out, "before", reference[1] - 2)  # every case finished, the store not yet written
    assert len(list((out / "rounds/.1.ipnp-incomplete/done").glob("*.json"))) == len(dataset.training_ids)
    specialist = CountingSpecialist(dataset)
    folder = run_round(dataset, specialist, BoxGeneralist(), out, 1, RefineSettings(tau=0.5))
    tested = _trust_cases(dataset)
    assert specialist.predicted == tested + [c for c in dataset.training_ids if c not in tested]  # each case once
    assert json.loads((folder / STATUS_FILE).read_text())["settings"]["tau"] == 0.5
    assert [p.name for p in (out / "rounds").iterdir()] == ["1"]
