"""``ipnp benchmark``: every method of the paper on one dataset, side by side in the layout of its Table 1.

With ``keep`` ratios the dataset must be fully labeled: partial labels are simulated once per ratio, with one
seed, into ``OUT/data/keep<ratio>/``, and every method of that ratio trains on that same copy. Without
``keep`` every method trains on the dataset's own partial labels (OpenKBP) and test cases are scored only on
the organs ``partial_labels.json`` lists for them. Each method x ratio is one run folder::

    OUT/runs/<method>/keep<ratio>/   (full-labels: OUT/runs/full-labels/full/; without keep: .../given/)
        specialist/ predictions/ evaluation/summary.json timings.json   (ipnp runs: an ``ipnp run`` folder)
    OUT/shared/<ratio tag>/marginal-epoch<E>-of<N>/   the training before IPnP's first round, which the
        ``marginal``, ``ipnp-novls`` and ``ipnp`` columns share (``first_segment_store``); ``share_from``
        copies it from another benchmark, so that an ablation's columns start from that benchmark's specialist

A run whose ``evaluation/summary.json`` exists is finished and skipped; any other run resumes where it
stopped. ``OUT/table.md``, ``table.csv`` and ``results.json`` are rewritten from every finished run after
each run, so they show the progress of a long benchmark. The settings every run depends on (dataset,
seed, run configuration) are saved in ``OUT/benchmark.json`` and ``OUT/config.yaml``; a later call with
other settings is refused rather than mixed into the same table.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ipnp.config import RunConfig, dump_config, parse_config
from ipnp.data.dataset import LABELS_TS, PartialDataset
from ipnp.data.io import (
    atomic_path, ensure_dir, read_json, refuse_output_inside, staged_dir, write_csv, write_json,
)
from ipnp.data.validate import require_valid
from ipnp.errors import IpnpError
from ipnp.evaluation.evaluate import SUMMARY_JSON
from ipnp.evaluation.table import build_table
from ipnp.loop import (
    EVALUATION, LOCK_FILE, LOG_FILE, SPECIALIST, TIMINGS_FILE,
    evaluate_tests, predict_tests, Timings, run_lock, run_log,
)

log = logging.getLogger(__name__)

FULL_LABELS = "full-labels"
IPNP_METHODS = ("ipnp-novls", "ipnp")  # run by ipnp.loop.run_ipnp; the others are one specialist each
# Column order of the paper's Table 1: full labels, then each method at every ratio. ``marginal`` is not in
# the paper's table: it is IPnP's initial training (the marginal loss) run for the whole budget, the control
# that says whether the pseudo-label rounds help.
METHODS = (FULL_LABELS, "full-sup", "partial-sup", "dodnet", "marginal", *IPNP_METHODS)
FULL_TAG, GIVEN_TAG = "full", "given"
SHARED = "shared"
SETTINGS_FILE, CONFIG_FILE = "benchmark.json", "config.yaml"
SHARED_FROM_FILE = "shared_from.json"  # in OUT/shared/: the benchmark whose first segments were copied
TABLE_MD, TABLE_CSV, RESULTS_JSON = "table.md", "table.csv", "results.json"


@dataclass(frozen=True)
class Column:
    """One method at one label ratio (``keep`` None: full labels for full-labels, else the dataset's own)."""

    method: str
    keep: float | None

    @property
    def tag(self) -> str:
        if self.method == FULL_LABELS:
            return FULL_TAG
        return GIVEN_TAG if self.keep is None else f"keep{self.keep:g}"

    @property
    def title(self) -> str:
        return self.method if self.keep is None else f"{self.method} {100 * self.keep:g}%"

    @classmethod
    def from_tag(cls, method: str, tag: str) -> Column | None:
        """The column whose run folder is named ``tag``; None for a folder the benchmark does not make."""
        keep = None
        if tag.startswith("keep"):
            try:
                keep = float(tag[4:])
            except ValueError:
                return None
        column = cls(method, keep)
        return column if column.tag == tag else None

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.method / self.tag

    def finished(self, out: Path) -> bool:
        return (self.run_dir(out) / EVALUATION / SUMMARY_JSON).is_file()


def default_methods(simulated: bool) -> list[str]:
    """Every method that applies: full-labels only when partial labels are simulated from full ones."""
    return [m for m in METHODS if simulated or m != FULL_LABELS]


def plan_columns(keep: list[float] | None, methods: list[str]) -> list[Column]:
    """The runs to do, in table order; a bad method or ratio is a one-line error."""
    if not methods:
        raise IpnpError("--methods: name at least one method")
    for method in methods:
        if method not in METHODS:
            raise IpnpError(f"--methods {method}: unknown method; choose from {', '.join(METHODS)}")
    if keep is not None and not keep:
        raise IpnpError("--keep: give at least one ratio, or leave --keep out for a partially labeled dataset")
    for ratio in keep or ():
        if not 0.0 < ratio <= 1.0:
            raise IpnpError(f"--keep {ratio}: must lie in (0, 1]")
    if keep is None and FULL_LABELS in methods:
        raise IpnpError(f"--methods {FULL_LABELS}: needs --keep (it trains on the full labels that --keep thins out)")
    columns = [Column(FULL_LABELS, None)] if FULL_LABELS in methods else []
    ratios = sorted({f"{r:g}": r for r in keep}.values(), reverse=True) if keep else [None]
    columns += [Column(m, r) for m in METHODS if m in methods and m != FULL_LABELS for r in ratios]
    return columns


def run_benchmark(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    *,
    keep: list[float] | None,
    methods: list[str],
    profile: str,
    seed: int = 0,
    epochs: int | None = None,
    iterations: int | None = None,
    device: str | None = None,
    config: RunConfig | None = None,
    share_from: str | os.PathLike | None = None,
) -> Path:
    """Train, predict and score every method x ratio into ``out``; return the path of ``out/table.md``.

    ``profile``, ``epochs``, ``iterations`` and ``device`` override ``config`` (the settings of the IPnP
    runs: rounds, refinement, generalist); every method trains with the same profile, epochs and iterations.
    ``share_from`` is another benchmark of the same dataset, seed and training schedule whose first segments
    (``first_segment_store``) the columns here start from instead of training their own (``adopt_first_segments``).
    """
    dataset, out = Path(dataset), Path(out)
    columns = plan_columns(keep, methods)
    if seed < 0:
        raise IpnpError(f"--seed {seed}: must not be negative")
    config = _effective_config(config or RunConfig(), profile, epochs, iterations, device)
    ds = _check_dataset(dataset, out, simulate=keep is not None)
    if share_from is not None:
        check_share_source(Path(share_from), out, ds.root, seed, config)
    with run_lock(out), run_log(out):
        _settle_settings(out, ds.root, seed, config)
        sources = {c.keep: _training_data(ds, out, c, seed) for c in columns}
        seeded = replace(config, seed=seed)
        if share_from is not None:
            adopt_first_segments(Path(share_from), out, columns, seeded)
        for column in columns:
            _run_column(column, sources[column.keep], out, seeded)
            write_outputs(out)
        return write_outputs(out)


def _effective_config(
    config: RunConfig, profile: str, epochs: int | None, iterations: int | None, device: str | None
) -> RunConfig:
    """``config`` with the given settings over its own, validated as a run configuration file is."""
    config = replace(config, profile=profile, device=device or config.device)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    if iterations is not None:
        config = replace(config, iterations_per_epoch=iterations)
    return parse_config(config.as_dict(), "benchmark settings")


def _check_dataset(dataset: Path, out: Path, simulate: bool) -> PartialDataset:
    ds = require_valid(dataset)
    refuse_output_inside(out, ds.root)
    if not ds.test_ids:
        raise IpnpError(f"{ds.root}: no test images (imagesTs); the benchmark scores every method on them")
    if not (ds.root / LABELS_TS).is_dir():
        raise IpnpError(f"{ds.root}: no {LABELS_TS}; the benchmark needs reference labels of the test images")
    if simulate and ds.is_partial:
        raise IpnpError(
            f"{ds.root}: already partially labeled (partial_labels.json); leave --keep out to benchmark its own labels"
        )
    return ds


def _settings(dataset: Path, seed: int) -> dict:
    """What ``benchmark.json`` holds: the settings, besides ``config.yaml``'s, every run depends on."""
    return {"dataset": str(dataset.absolute()), "seed": seed}


def _settle_settings(out: Path, dataset: Path, seed: int, config: RunConfig) -> None:
    """Save the settings every run depends on, or check that they equal the saved ones."""
    settings = _settings(dataset, seed)
    saved_path, config_path = out / SETTINGS_FILE, out / CONFIG_FILE
    if saved_path.is_file():
        saved = read_json(saved_path)
        saved_config = parse_config(yaml.safe_load(config_path.read_text()), str(config_path))
        if saved != settings or saved_config != config:
            raise IpnpError(
                f"{out}: holds a benchmark of {saved['dataset']} with seed {saved['seed']} and the settings of its "
                f"{CONFIG_FILE}; give those settings or choose another --out"
            )
        return
    if any(p.name not in (LOCK_FILE, LOG_FILE, CONFIG_FILE) for p in out.iterdir()):
        raise IpnpError(f"{out}: not empty and not an ipnp benchmark; choose another --out")
    with atomic_path(config_path) as tmp:
        tmp.write_text(dump_config(config))
    write_json(settings, saved_path)


def _training_data(ds: PartialDataset, out: Path, column: Column, seed: int) -> Path:
    """The dataset a column trains on: the input itself, or its partial copy for ``column.keep`` (made once)."""
    if column.keep is None:
        return ds.root
    from ipnp.data.partial import simulate_partial_labels

    path = out / "data" / column.tag
    if not path.is_dir():
        log.info("simulating partial labels: keep %g, seed %d -> %s", column.keep, seed, path)
        simulate_partial_labels(ds.root, path, keep=column.keep, seed=seed)
    return path


def first_segment_store(out: Path, column: Column, config: RunConfig) -> Path | None:
    """Where ``column`` shares the marginal-loss training before IPnP's first round with the other columns of
    its data (``ipnp``, ``ipnp-novls`` and ``marginal``, which trains the same way for the whole budget); None
    for the methods that train otherwise and for a schedule without rounds.

    Every run of a benchmark has the same settings (``_settle_settings``), so those columns would train these
    epochs identically (with a seed, to the bit on the CPU); sharing them saves that time and pairs the columns
    from the same specialist.
    """
    if column.method not in ("marginal", *IPNP_METHODS) or not config.round_epochs():
        return None
    return out / SHARED / column.tag / f"marginal-epoch{config.round_epochs()[0]}-of{config.total_epochs}"


def check_share_source(source: Path, out: Path, dataset: Path, seed: int, config: RunConfig) -> None:
    """Refuse ``source`` unless it is a benchmark of ``dataset`` with ``seed`` and the training schedule of
    ``config`` before the first round."""
    if source.absolute() == out.absolute():
        raise IpnpError(f"--share-from {source}: is --out itself")
    if not (source / SETTINGS_FILE).is_file() or not (source / CONFIG_FILE).is_file():
        raise IpnpError(f"--share-from {source}: not an ipnp benchmark (no {SETTINGS_FILE} and {CONFIG_FILE})")
    theirs = read_json(source / SETTINGS_FILE)
    if theirs != _settings(dataset, seed):
        raise IpnpError(f"--share-from {source}: a benchmark of {theirs['dataset']} with seed {theirs['seed']}, "
                        f"not of {dataset.absolute()} with seed {seed}")
    their_config = parse_config(yaml.safe_load((source / CONFIG_FILE).read_text()), str(source / CONFIG_FILE))
    schedule = ("profile", "epochs", "iterations_per_epoch")
    differs = [name for name in schedule if getattr(their_config, name) != getattr(config, name)]
    if differs or their_config.round_epochs()[:1] != config.round_epochs()[:1]:
        raise IpnpError(f"--share-from {source}: trains another schedule before the first round "
                        f"({', '.join(differs) or 'the first round'} differs); it cannot share its first segment")


def adopt_first_segments(source: Path, out: Path, columns: list[Column], config: RunConfig) -> None:
    """Copy the first segments ``columns`` share (``first_segment_store``) from benchmark ``source`` into
    ``out/shared`` where they are missing, so that a paired ablation differs from ``source`` by the rounds alone.

    ``source`` (checked by ``check_share_source``) must hold the segment of every such column, trained on the
    same simulated labels; it is only read.
    """
    copies = []
    for column in columns:
        mine = first_segment_store(out, column, config)
        if mine is None or mine.exists():
            continue
        theirs = source / mine.relative_to(out)
        if not theirs.is_dir():
            raise IpnpError(f"--share-from {source}: holds no first segment for {column.title} ({theirs} is "
                            f"missing); run its marginal or ipnp column first")
        labels = Path("data") / column.tag / "partial_labels.json"
        if column.keep is not None and read_json(source / labels) != read_json(out / labels):
            raise IpnpError(f"--share-from {source}: its simulated labels of {column.tag} differ from these")
        copies.append((theirs, mine))
    if copies:
        ensure_dir(out / SHARED)
        write_json({"benchmark": str(source.absolute())}, out / SHARED / SHARED_FROM_FILE)
    for theirs, mine in copies:
        log.info("first segment copied from %s to %s", theirs, mine)
        with staged_dir(mine) as staging:
            shutil.copytree(theirs, staging, dirs_exist_ok=True)


def _run_column(column: Column, dataset: Path, out: Path, config: RunConfig) -> None:
    run_dir = column.run_dir(out)
    if column.finished(out):
        log.info("%s: finished, skipped (%s)", column.title, run_dir)
        return
    log.info("%s: training on %s into %s", column.title, dataset, run_dir)
    shared = first_segment_store(out, column, config)
    if column.method in IPNP_METHODS:
        from ipnp.loop import run_ipnp

        run_ipnp(dataset, run_dir, replace(config, vls=column.method == "ipnp"), resume=True, first_segment=shared)
    else:
        _run_specialist("full-sup" if column.method == FULL_LABELS else column.method, dataset, run_dir, config, shared)


def _run_specialist(method: str, dataset: Path, run_dir: Path, config: RunConfig, shared: Path | None) -> None:
    """Train one specialist, predict the test images and score them, in the layout of an ``ipnp run`` folder.

    With ``shared`` (``first_segment_store``) the training stops at the first round's epoch to share the model
    folder there, then goes on.
    """
    from ipnp.specialist.train import train_specialist

    ds = require_valid(dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings = Timings(run_dir)
    settings = dict(epochs=config.epochs, iterations=config.iterations_per_epoch, device=config.device, resume=True,
                    seed=config.seed)
    with timings.stage("train"):
        if shared is not None:
            train_specialist(ds.root, run_dir / SPECIALIST, method, config.profile, until_epoch=config.round_epochs()[0],
                             shared=shared, **settings)
        train_specialist(ds.root, run_dir / SPECIALIST, method, config.profile, **settings)
    with timings.stage("predict"):
        predict_tests(ds, run_dir, config)
    with timings.stage("evaluate"):
        evaluate_tests(ds, run_dir)


def table_order(column: Column) -> tuple[int, float]:
    """Sort key of Table 1's columns: full labels, then each method with its ratios from high to low."""
    return METHODS.index(column.method), -(column.keep if column.keep is not None else 2.0)


def finished_columns(out: Path) -> list[Column]:
    """Every finished run under ``out/runs``, in table order."""
    columns = []
    for method in METHODS:
        folder = out / "runs" / method
        found = [Column.from_tag(method, p.name) for p in folder.iterdir()] if folder.is_dir() else []
        columns += [c for c in found if c is not None and c.finished(out)]
    return sorted(columns, key=table_order)


def write_outputs(out: Path) -> Path:
    """(Re)write ``table.md``, ``table.csv`` and ``results.json`` from the finished runs; return table.md."""
    settings = read_json(out / SETTINGS_FILE)
    shared_from = out / SHARED / SHARED_FROM_FILE
    if shared_from.is_file():
        settings = {**settings, "shared_from": read_json(shared_from)["benchmark"]}
    config = parse_config(yaml.safe_load((out / CONFIG_FILE).read_text()), str(out / CONFIG_FILE))
    columns = finished_columns(out)
    runs = [_run_record(out, c) for c in columns]
    table = build_table([(r["title"], r["summary"]) for r in runs])
    machine = _machine(config.device)
    command = _command(out, settings, config, columns)
    header = (
        f"Dataset `{settings['dataset']}` · profile `{config.profile}` · seed {settings['seed']} · machine: "
        f"{machine['platform']}, {machine['cpus']} CPUs, torch device {machine['torch_device']}\n\n"
        f"Command: `{command}`\n"
    )
    wall = ["| run | wall time (min) | shared first segment (min) | folder |", "| :--- | ---: | ---: | :--- |"] + [
        f"| {r['title']} | {r['seconds'] / 60:.1f} | {_minutes(r['shared_seconds'])} | `{r['run_dir']}` |" for r in runs
    ]
    note = (
        "\nA run that started from the shared first segment (`shared/`) did not train it: its wall time leaves it "
        "out, and the next column gives the training time of those epochs (from nnU-Net's epoch timestamps; –: "
        "the run trained its own, or started from a segment that did not record it).\n"
    )
    with atomic_path(out / TABLE_MD) as tmp:
        tmp.write_text(f"# Benchmark\n\n{header}\n{table.markdown()}\n## Wall time\n\n" + "\n".join(wall) + "\n" + note)
    write_csv(*table.csv(), out / TABLE_CSV)
    write_json({**settings, "profile": config.profile, "machine": machine, "command": command, "runs": runs,
                "table": table.records()}, out / RESULTS_JSON)
    return out / TABLE_MD


def _run_record(out: Path, column: Column) -> dict:
    run_dir = column.run_dir(out)
    return {
        "method": column.method,
        "keep": column.keep,
        "title": column.title,
        "run_dir": str(run_dir.relative_to(out)),
        "seconds": round(sum(read_json(run_dir / TIMINGS_FILE).values()), 2),
        "shared_seconds": _shared_seconds(run_dir),
        "summary": read_json(run_dir / EVALUATION / SUMMARY_JSON),
    }


def _shared_seconds(run_dir: Path) -> float | None:
    """Training seconds of the shared first segment a run started from; None if it trained its own.

    Model folders adopted before these seconds were recorded say nothing of them: also None.
    """
    from ipnp.specialist.train import SHARED_JSON

    records = [read_json(p) for p in (run_dir / SPECIALIST).rglob(SHARED_JSON)]
    return next((r["seconds"] for r in records if "seconds" in r), None)


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def _machine(device: str) -> dict:
    from ipnp.specialist.nnunet_env import resolve_device

    torch_device = resolve_device(device)
    if torch_device.type == "cuda":
        import torch

        name = f"{torch_device} ({torch.cuda.get_device_name(torch_device)})"
    else:
        name = str(torch_device)
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_device": name}


def _command(out: Path, settings: dict, config: RunConfig, columns: list[Column]) -> str:
    """The command that reproduces the table's runs; ``OUT/config.yaml`` holds every run setting."""
    ratios = sorted({f"{c.keep:g}" for c in columns if c.keep is not None}, key=float, reverse=True)
    methods = [m for m in METHODS if any(c.method == m for c in columns)]
    if not ratios and FULL_LABELS in methods:
        ratios = ["1"]  # full-labels alone ignores the ratio, but it is only defined with --keep
    words = ["ipnp", "benchmark", settings["dataset"]] + (["--keep", *ratios] if ratios else [])
    words += ["--methods", *methods, "--profile", config.profile, "--seed", str(settings["seed"])]
    words += ["--config", str(out / CONFIG_FILE), "--out", str(out)]
    if "shared_from" in settings:
        words += ["--share-from", settings["shared_from"]]
    return shlex.join(words)
