"""``ipnp benchmark`` on tiny phantoms: one table from every run, shared partial labels, resume, errors."""

import csv
import json
import os
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import yaml

from conftest import make_dataset, tree_digest
from ipnp.benchmark import plan_columns, run_benchmark
from ipnp.benchmark_seeds import run_seeds, write_seed_summary
from ipnp.cli import main
from ipnp.data.io import read_image, write_image
from ipnp.config import RoundsConfig, RunConfig
from ipnp.errors import IpnpError
from ipnp.report import save_figure
from ipnp.specialist.train import SHARED_JSON, checkpoint_epoch, checkpoint_training_seconds
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
    titles = [c.title for c in plan_columns([0.33, 0.67, 0.330], ["ipnp", "marginal", "dodnet", "full-labels", "full-sup"])]
    assert titles == ["full-labels", "full-sup 67%", "full-sup 33%", "dodnet 67%", "dodnet 33%", "marginal 67%",
                      "marginal 33%", "ipnp 67%", "ipnp 33%"]
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


@pytest.fixture(scope="module")
def shared_bench(phantoms, tmp_path_factory) -> tuple[Path, list[int]]:
    """A benchmark of ``marginal``, ``ipnp-novls`` and ``ipnp``; the epochs its trainings started at."""
    import ipnp.specialist.train as train_module

    starts = []  # seeded at each start
    seed_generators = train_module.seed_generators
    out = tmp_path_factory.mktemp("shared-bench") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "seed_generators", lambda seed, epoch: (starts.append(epoch), seed_generators(seed, epoch)))
        run_benchmark(phantoms / "full", out, **{**SETTINGS, "methods": ["ipnp", "ipnp-novls", "marginal"]})
    return out, starts


def first_model(run: Path) -> Path:
    """The model folder of a run's training before the first round."""
    return next((run / "specialist" / "nnunet" / "results").rglob("nnUNetTrainer_ipnpMarginal__*"))


def test_marginal_and_the_ipnp_columns_share_the_training_before_the_first_round(shared_bench):
    out, starts = shared_bench
    # marginal runs first (table order), trains to the round's epoch 1, fills the store and goes on to epoch 2.
    shared = out / "shared" / "keep0.33" / "marginal-epoch1-of2"
    assert checkpoint_epoch(shared / "fold_all" / "checkpoint_final.pth") == 1
    assert starts.count(0) == 2  # initial weights and the first patches, of one training from scratch, not three
    for method in ("ipnp-novls", "ipnp", "marginal"):
        run = out / "runs" / method / "keep0.33"
        assert (run / "evaluation" / "summary.json").is_file()
        first = first_model(run)
        adopted = (first / SHARED_JSON).is_file()
        assert adopted == (method != "marginal"), method
        if adopted:
            assert tree_digest(first / "fold_all")["checkpoint_final.pth"] == tree_digest(shared / "fold_all")["checkpoint_final.pth"]
    marginal_final = next((out / "runs" / "marginal").rglob("checkpoint_final.pth"))
    assert checkpoint_epoch(marginal_final) == 2
    # Wall times: the adopting columns name the shared epochs' training time, which marginal spent itself.
    runs = {r["title"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert runs["marginal 33%"]["shared_seconds"] is None
    spent = checkpoint_training_seconds(shared / "fold_all" / "checkpoint_final.pth")
    assert spent > 0
    for title in ("ipnp-novls 33%", "ipnp 33%"):
        assert runs[title]["shared_seconds"] == pytest.approx(spent, abs=0.05)
    assert f"| ipnp 33% | {runs['ipnp 33%']['seconds'] / 60:.1f} | {spent / 60:.1f} |" in (out / "table.md").read_text()


def test_share_from_starts_an_ablation_from_another_benchmarks_first_segment(shared_bench, phantoms, tmp_path, monkeypatch):
    import ipnp.specialist.train as train_module

    source, _ = shared_bench
    before = tree_digest(source)
    starts = []
    seed_generators = train_module.seed_generators
    monkeypatch.setattr(train_module, "seed_generators", lambda seed, epoch: (starts.append(epoch), seed_generators(seed, epoch)))
    ablation = replace(TINY, refine=replace(TINY.refine, trust_precision=0.0))
    out = tmp_path / "ablation"
    run_benchmark(phantoms / "full", out, **{**SETTINGS, "methods": ["ipnp"], "config": ablation}, share_from=source)
    assert 0 not in starts  # nothing trained from scratch
    store = Path("shared") / "keep0.33" / "marginal-epoch1-of2" / "fold_all" / "checkpoint_final.pth"
    first = first_model(out / "runs" / "ipnp" / "keep0.33")
    assert tree_digest(first / "fold_all")["checkpoint_final.pth"] == tree_digest(source / store.parent)[store.name]
    assert tree_digest(source) == before  # the source is only read
    results = json.loads((out / "results.json").read_text())
    assert results["shared_from"] == str(source.absolute())
    assert results["command"].endswith(f"--share-from {source.absolute()}")
    assert results["runs"][0]["shared_seconds"] == pytest.approx(checkpoint_training_seconds(source / store), abs=0.05)
    run_benchmark(phantoms / "full", out, **{**SETTINGS, "methods": ["ipnp"], "config": ablation})  # resumes without it
    assert tree_digest(source) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 6}, "a benchmark of .* with seed 5, not of .* with seed 6"),
        ({"epochs": 3}, r"trains another schedule before the first round \(epochs differs\)"),
        ({"methods": ["ipnp"], "keep": [0.67]}, "holds no first segment for ipnp 67%"),
    ],
)
def test_share_from_refuses_a_benchmark_it_cannot_pair_with(shared_bench, phantoms, tmp_path, change, message):
    source, _ = shared_bench
    settings = {**SETTINGS, "methods": ["ipnp"], **change}
    with pytest.raises(IpnpError, match=message) as err:
        run_benchmark(phantoms / "full", tmp_path / "out", **settings, share_from=source)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out" / "shared").exists() and not (tmp_path / "out" / "runs").exists()


def test_share_from_needs_a_benchmark(phantoms, tmp_path):
    with pytest.raises(IpnpError, match="--share-from .*: not an ipnp benchmark"):
        run_benchmark(phantoms / "full", tmp_path / "out", **SETTINGS, share_from=phantoms / "full")
    assert not (tmp_path / "out").exists()


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
        ({"seed": -1}, "--seed -1: must not be negative"),
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


def _second_seed(results: dict, seed: int, scale: dict[str, float]) -> dict:
    """``results`` as if from another seed whose columns scored ``scale[title]`` times as well."""
    results = json.loads(json.dumps(results))
    results["seed"] = seed
    for run in results["runs"]:
        factor = scale[run["title"]]
        run["summary"]["mean_dsc"] *= factor
        for entry in run["summary"]["organs"].values():
            entry["dsc"] = None if entry["dsc"] is None else entry["dsc"] * factor
    return results


def test_seed_summary_pairs_columns_seed_by_seed(bench, tmp_path, monkeypatch):
    first = json.loads((bench / "results.json").read_text())
    second = _second_seed(first, 9, {"full-labels": 0.5, "full-sup 33%": 1.0, "ipnp 33%": 1.5})
    for results in (first, second):
        (tmp_path / f"seed{results['seed']}").mkdir()
        (tmp_path / f"seed{results['seed']}" / "results.json").write_text(json.dumps(results))
    figures = []
    monkeypatch.setattr("ipnp.benchmark_seeds.save_figure", lambda fig, dest: (figures.append(fig), save_figure(fig, dest)))
    with matplotlib.rc_context({"font.size": 40}):  # as nnU-Net's progress plot leaves a process that trained
        assert write_seed_summary(tmp_path) == tmp_path / "seeds.md"
    assert figures[0].axes[0].yaxis.label.get_fontsize() == 10  # matplotlib's default, not the process's

    dsc = {(r["title"], s["seed"]): 100 * r["summary"]["mean_dsc"] for s in (first, second) for r in s["runs"]}
    with open(tmp_path / "seeds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["title"], int(r["seed"])) for r in rows] == [
        ("full-labels", 5), ("full-labels", 9), ("full-sup 33%", 5), ("full-sup 33%", 9), ("ipnp 33%", 5), ("ipnp 33%", 9)
    ]
    assert [float(r["mean DSC (%)"]) for r in rows] == pytest.approx([dsc[r["title"], int(r["seed"])] for r in rows])

    summary = json.loads((tmp_path / "seeds.json").read_text())
    ipnp = next(c for c in summary["columns"] if c["title"] == "ipnp 33%")
    assert ipnp["seeds"] == [5, 9] and ipnp["mean"] == pytest.approx((dsc["ipnp 33%", 5] + dsc["ipnp 33%", 9]) / 2)
    [pair] = summary["paired_differences"]  # full-labels has no ratio to pair on
    assert (pair["a"], pair["b"], pair["seeds"]) == ("ipnp 33%", "full-sup 33%", [5, 9])
    assert pair["difference"] == pytest.approx([dsc["ipnp 33%", s] - dsc["full-sup 33%", s] for s in (5, 9)])
    assert pair["a_higher"] == sum(d > 0 for d in pair["difference"])
    ratios = {r["title"]: r["ratio"] for r in summary["full_label_ratios"]}
    assert ratios["full-sup 33%"] == pytest.approx([dsc["full-sup 33%", s] / dsc["full-labels", s] for s in (5, 9)])
    assert "full-labels" not in ratios

    organ = next(r for r in summary["table"] if r["organ_id"] == 1)["columns"]["ipnp 33%"]["dsc"]
    per_seed = [next(r for r in s["runs"] if r["title"] == "ipnp 33%")["summary"]["organs"] for s in (first, second)]
    assert organ == pytest.approx(50 * sum(next(e["dsc"] for e in o.values() if e["id"] == 1) for o in per_seed))
    seeds_dsc = [100 * next(e["dsc"] for e in o.values() if e["id"] == 1) for o in per_seed]
    spread = next(r for r in summary["organ_spread"] if r["organ_id"] == 1)["columns"]["ipnp 33%"]
    assert spread["mean"] == pytest.approx(organ) and spread["sd"] == pytest.approx(statistics.stdev(seeds_dsc))
    assert spread["sd"] > 0  # the second seed scored 1.5 times as well
    markdown = (tmp_path / "seeds.md").read_text()
    assert "| ipnp 33% | full-sup 33% | 5 9 |" in markdown and "## Ratio to full-labels" in markdown
    assert f"{spread['mean']:.1f} ± {spread['sd']:.1f}" in markdown.split("mean ± sd over seeds")[1]
    assert (tmp_path / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    other = _second_seed(first, 11, {"full-labels": 1, "full-sup 33%": 1, "ipnp 33%": 1}) | {"profile": "default"}
    (tmp_path / "seed11").mkdir()
    (tmp_path / "seed11" / "results.json").write_text(json.dumps(other))
    with pytest.raises(IpnpError, match=r"seed11/results.json: a benchmark of .* \(default\), not of .* \(tiny\)"):
        write_seed_summary(tmp_path)


def test_several_seeds_run_one_benchmark_each(phantoms, tmp_path, capsys):
    out = tmp_path / "seeds"
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY.as_dict()))
    argv = ["benchmark", str(phantoms / "full"), "--out", str(out), "--keep", "0.67", "--methods", "full-sup",
            "--profile", "tiny", "--epochs", "2", "--iterations", "1", "--device", "cpu", "--config", str(tiny)]
    assert main([*argv, "--seed", "5", "6"]) == 0
    for seed in (5, 6):
        assert json.loads((out / f"seed{seed}" / "benchmark.json").read_text())["seed"] == seed
        assert (out / f"seed{seed}" / "runs/full-sup/keep0.67/evaluation/summary.json").is_file()
    # Each seed simulates its own partial labels.
    assert (out / "seed5/data/keep0.67/partial_labels.json").read_text() != (
        out / "seed6/data/keep0.67/partial_labels.json").read_text()
    assert "| full-sup 67% | 5 6 |" in capsys.readouterr().out

    # --share-from with several seeds takes each seed's benchmark from BENCH/seed<S>.
    capsys.readouterr()
    assert main([*argv, "--seed", "5", "6", "--share-from", str(tmp_path / "elsewhere")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ipnp: error: --share-from {tmp_path / 'elsewhere' / 'seed5'}: not an ipnp benchmark (no benchmark.json and config.yaml)"
    )

    with pytest.raises(IpnpError, match="a seed is named twice"):
        run_seeds(phantoms / "full", out, [5, 5])
    with pytest.raises(IpnpError, match="holds a single-seed benchmark"):
        run_seeds(phantoms / "full", out / "seed5", [5, 6])
