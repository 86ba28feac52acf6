"""``ipnp benchmark`` on tiny phantoms: one table from every run, shared partial labels, resume, errors."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_dataset, tree_digest
from ipnp.benchmark import plan_columns, run_benchmark
from ipnp.data.io import read_image, write_image
from ipnp.config import RoundsConfig, RunConfig
from ipnp.errors import IpnpError
from test_loop import make_partial_phantoms
from test_pseudo import BoxGeneralist

KEEP, SEED = 0.33, 5  # the seed test_loop's helper needs for every organ to stay labeled
TINY = RunConfig(profile="tiny", device="cpu", rounds=RoundsConfig(at=None, epochs=(1,)))
SETTINGS = dict(keep=[KEEP], methods=["ipnp", "full-labels", "full-sup"], profile="tiny", seed=SEED, epochs=2,
                iterations=1, device="cpu", config=TINY)
RUNS = {  # column title -> run folder
    "full-labels": "runs/full-labels/full", "full-sup 33%": "runs/full-sup/keep0.33", "ipnp 33%": "runs/ipnp/keep0.33",
}


@pytest.fixture(scope="module", autouse=True)
def box_generalist():
    """The classical generalist needs minutes per round here; the rounds themselves are test_loop's subject."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ipnp.loop.make_generalist_for", lambda config: BoxGeneralist())
        yield


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """``full/``: the fully labeled phantoms; ``partial/``: ``ipnp partial`` of them with KEEP and SEED."""
    root = tmp_path_factory.mktemp("bench-data")
    make_partial_phantoms(root, n_train=6, n_test=1)
    return root


@pytest.fixture(scope="module")
def bench(phantoms, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "out"
    before = tree_digest(phantoms / "full")
    assert run_benchmark(phantoms / "full", out, **SETTINGS) == out / "table.md"
    assert tree_digest(phantoms / "full") == before  # the input is only read
    return out


def checkpoints(run: Path) -> dict[str, str]:
    return {name: digest for name, digest in tree_digest(run).items() if name.endswith(".pth")}


def summary(out: Path, title: str) -> dict:
    return json.loads((out / RUNS[title] / "evaluation" / "summary.json").read_text())


def test_columns_follow_table_1_order():
    titles = [c.title for c in plan_columns([0.33, 0.67, 0.330], ["ipnp", "dodnet", "full-labels", "full-sup"])]
    assert titles == ["full-labels", "full-sup 67%", "full-sup 33%", "dodnet 67%", "dodnet 33%", "ipnp 67%", "ipnp 33%"]
    assert [c.title for c in plan_columns(None, ["partial-sup", "ipnp-novls"])] == ["partial-sup", "ipnp-novls"]


def test_table_holds_every_runs_scores(bench):
    with open(bench / "table.csv", newline="") as f:
        rows = {row["organ"]: row for row in csv.DictReader(f)}
    markdown = (bench / "table.md").read_text()
    columns = next(line for line in markdown.splitlines() if line.startswith("| id |"))
    assert all(f"{title} DSC (%)" in columns for title in RUNS)
    for title in RUNS:
        scores = summary(bench, title)
        for organ, entry in scores["organs"].items():
            assert float(rows[organ][f"{title} DSC (%)"]) == pytest.approx(100 * entry["dsc"])
            assert float(rows[organ][f"{title} HD95 (mm)"]) == pytest.approx(entry["hd95"])
            assert f"| {organ} |" in markdown
        assert float(rows["Average"][f"{title} DSC (%)"]) == pytest.approx(100 * scores["mean_dsc"])
        assert f"{100 * scores['mean_dsc']:.2f}" in markdown.split("**Average**")[1].splitlines()[0]


def test_header_and_results_record_settings_machine_and_wall_time(bench, phantoms):
    header = (bench / "table.md").read_text().split("| id |")[0]
    assert f"`{phantoms / 'full'}`" in header and "profile `tiny`" in header and f"seed {SEED}" in header
    assert f"{os.cpu_count()} CPUs, torch device cpu" in header
    assert "Command: `ipnp benchmark " in header and "--keep 0.33 --methods full-labels full-sup ipnp" in header
    results = json.loads((bench / "results.json").read_text())
    assert [r["title"] for r in results["runs"]] == list(RUNS)
    for run in results["runs"]:
        timings = json.loads((bench / run["run_dir"] / "timings.json").read_text())
        assert run["seconds"] > 0 and run["seconds"] == pytest.approx(sum(timings.values()), abs=0.02)
        assert run["run_dir"] == RUNS[run["title"]] and run["summary"] == summary(bench, run["title"])
    assert results["seed"] == SEED and results["profile"] == "tiny"


def test_every_method_trains_on_the_same_simulated_labels(bench, phantoms):
    data = bench / "data" / "keep0.33"
    # Same source and seed as `ipnp partial` into phantoms/partial: the same organs are kept.
    assert (data / "partial_labels.json").read_text() == (phantoms / "partial" / "partial_labels.json").read_text()
    assert tree_digest(data / "labelsTr") == tree_digest(phantoms / "partial" / "labelsTr")
    record = json.loads((bench / RUNS["full-sup 33%"] / "specialist" / "specialist.json").read_text())
    assert record["method"] == "full-sup" and Path(record["dataset"]) == data.absolute()
    assert Path(yaml.safe_load((bench / RUNS["ipnp 33%"] / "config.yaml").read_text())["dataset"]) == data.absolute()
    full = json.loads((bench / RUNS["full-labels"] / "specialist" / "specialist.json").read_text())
    assert full["method"] == "full-sup" and Path(full["dataset"]) == (phantoms / "full").absolute()


def test_finished_runs_are_skipped_and_interrupted_ones_resume(bench, phantoms):
    runs = tree_digest(bench / "runs")
    run_benchmark(phantoms / "full", bench, **SETTINGS)
    assert tree_digest(bench / "runs") == runs  # nothing retrained, predicted or scored again
    # Interrupted after prediction: only the scoring is redone, for a specialist run and for an IPnP run.
    scores = {title: summary(bench, title) for title in RUNS}
    models = {title: checkpoints(bench / RUNS[title]) for title in RUNS}
    for title in ("full-sup 33%", "ipnp 33%"):
        for path in sorted((bench / RUNS[title] / "evaluation").iterdir()):
            path.unlink()
        (bench / RUNS[title] / "evaluation").rmdir()
    run_benchmark(phantoms / "full", bench, **SETTINGS)
    assert {title: summary(bench, title) for title in RUNS} == scores
    assert {title: checkpoints(bench / RUNS[title]) for title in RUNS} == models  # not retrained


def test_without_keep_methods_train_on_the_given_labels_and_score_only_labeled_organs(phantoms, tmp_path):
    given = tmp_path / "given"
    shutil.copytree(phantoms / "partial", given)
    # The test case's reference has only spleen and liver, as OpenKBP's test cases lack some organs.
    reference = given / "labelsTs" / "phantom_006.nii.gz"
    label, geometry = read_image(reference)
    write_image(np.where(np.isin(label, [1, 6]), label, 0).astype(np.uint8), geometry, reference)
    manifest = json.loads((given / "partial_labels.json").read_text())
    (given / "partial_labels.json").write_text(json.dumps({**manifest, "phantom_006": [1, 6]}))
    table = run_benchmark(given, tmp_path / "out", **{**SETTINGS, "keep": None, "methods": ["partial-sup"]}).read_text()
    run = tmp_path / "out" / "runs" / "partial-sup" / "given"
    scores = json.loads((run / "evaluation" / "summary.json").read_text())
    assert {o["id"] for o in scores["organs"].values() if o["n"]} == {1, 6}
    assert "| partial-sup DSC (%) |" in table and "| 2 | right kidney | 0 | – | – |" in table
    assert not (tmp_path / "out" / "data").exists()


def test_other_settings_are_refused_in_the_same_folder(bench, phantoms):
    with pytest.raises(IpnpError, match="holds a benchmark of .* with seed 5") as err:
        run_benchmark(phantoms / "full", bench, **{**SETTINGS, "seed": 6})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": ["ipnp", "nnunet"]}, "--methods nnunet: unknown method"),
        ({"keep": [0.5, 0.0]}, r"--keep 0.0: must lie in \(0, 1\]"),
        ({"keep": [1.5]}, r"--keep 1.5: must lie in \(0, 1\]"),
        ({"keep": None}, "--methods full-labels: needs --keep"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, change, message):
    with pytest.raises(IpnpError, match=message) as err:
        run_benchmark(tmp_path / "missing", tmp_path / "out", **{**SETTINGS, **change})
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_datasets_it_cannot_benchmark_are_one_line_errors(tmp_path, phantoms):
    no_tests = make_dataset(tmp_path / "no-tests", n_test=0)
    with pytest.raises(IpnpError, match="no test images"):
        run_benchmark(no_tests, tmp_path / "out", **SETTINGS)
    no_labels = make_dataset(tmp_path / "no-labels")
    for path in (no_labels / "labelsTs").iterdir():
        path.unlink()
    (no_labels / "labelsTs").rmdir()
    with pytest.raises(IpnpError, match="no labelsTs"):
        run_benchmark(no_labels, tmp_path / "out", **SETTINGS)
    with pytest.raises(IpnpError, match="already partially labeled .* leave --keep out"):
        run_benchmark(phantoms / "partial", tmp_path / "out", **{**SETTINGS, "methods": ["ipnp"]})
    assert not (tmp_path / "out").exists()
