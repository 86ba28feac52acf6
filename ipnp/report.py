"""The run report: ``RUN/report.md`` and its figures under ``RUN/figures/``, regenerated from the run folder.

It reads only what the run wrote (``config.yaml``, ``rounds/<k>/``, ``predictions/``,
``evaluation/summary.json``) and the dataset the config names; any part may be missing, for a run still in
progress or a dataset without test labels, and the report then says so in a line. Nothing in it depends on
the time it is written, so writing it twice gives the same file.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import yaml
from matplotlib import style
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ipnp.config import parse_config
from ipnp.data.dataset import PartialDataset, read_label
from ipnp.data.io import Geometry, atomic_path, ensure_dir, read_image, read_json
from ipnp.errors import IpnpError
from ipnp.evaluation.table import build_table
from ipnp.pseudo.prompts import AnatomicalAxes, anatomical_axes
from ipnp.pseudo.round import ACCEPTED, REJECTED, SKIPPED, STATUS_FILE, accepted_dice

REPORT, FIGURES, CONFIG = "report.md", "figures", "config.yaml"
DICE_FIGURE, TRAINING_FIGURE, TEST_FIGURE = "pseudo_label_dice.png", "training_cases.png", "test_cases.png"
MAX_CASES = 3  # cases per qualitative figure
MAX_ROUNDS_SHOWN = 6  # round columns in the training figure, spread from the first to the last round
TOP_REASONS = 3
MAX_FIGURE_BYTES = 1_000_000
_PANEL_INCHES, _DPIS = 2.4, (100, 80, 60)
# matplotlib's own defaults for every figure: nnU-Net's progress plot calls seaborn.set(font_scale=2.5), which
# changes the global rcParams of any process that trained, and its figures came out with 2.5x letters.
default_style = style.context("default")


@dataclass
class RoundSummary:
    """What one pseudo-labeling round did, from its ``pseudo_status.json``."""

    k: int
    gate: bool
    counts: dict[str, int]
    carried: int  # (case, organ) pairs carrying a pseudo-label after the round
    dice: list[float]  # Dice (%) of those pseudo-labels against labelsTr_full, where known
    organ_dice: dict[int, list[float]]
    organ_precision: dict[int, list[float]]  # precision (%) of the same pseudo-labels, where recorded
    organ_ml: dict[int, list[float]]  # volume (mL) of the same pseudo-labels, where the voxel's volume is recorded
    labelled_ml: dict[int, list[float]]  # volume (mL) of each organ in the training cases whose true labels hold it
    reasons: Counter  # (status, reason with numbers elided) of rejected and skipped organs
    seconds: float
    accepted: tuple[float, float] | None  # mean Dice (%) of the labels accepted this round, and of the specialist's masks

    @property
    def mean_dice(self) -> float | None:
        return float(np.mean(self.dice)) if self.dice else None


def summarize_round(k: int, status: dict) -> RoundSummary:
    """Counts, carried pseudo-labels, their Dice (overall and per organ) and reasons of one round."""
    dice: list[float] = []
    organ_dice: dict[int, list[float]] = {}
    organ_precision: dict[int, list[float]] = {}
    organ_ml: dict[int, list[float]] = {}
    labelled_ml: dict[int, list[float]] = {}
    reasons: Counter = Counter()
    carried, seconds = 0, status.get("trust", {}).get("seconds", 0.0)
    for entry in status["cases"].values():
        seconds += sum(entry.get("seconds", {}).values())
        for organ, ml in entry.get("labelled_ml", {}).items():  # absent in rounds stored before it was recorded
            labelled_ml.setdefault(int(organ), []).append(ml)
        for organ, outcome in entry["organs"].items():
            if outcome["status"] != ACCEPTED:
                # Numbers (entropies, distances) differ in every reason; without them equal reasons count together.
                reasons[outcome["status"], re.sub(r"\d+(?:\.\d+)?", "…", outcome["reason"])] += 1
            if outcome["pseudo_label"]:
                carried += 1
                if outcome["dice"] is not None:
                    dice.append(100.0 * outcome["dice"])
                    organ_dice.setdefault(int(organ), []).append(100.0 * outcome["dice"])
                if outcome.get("precision") is not None:  # absent in rounds stored before it was recorded
                    organ_precision.setdefault(int(organ), []).append(100.0 * outcome["precision"])
                if "voxel_ml" in entry:
                    organ_ml.setdefault(int(organ), []).append(outcome["voxels"] * entry["voxel_ml"])
    means = accepted_dice(status)
    accepted = None if means is None else (100.0 * means[0], 100.0 * means[1])
    return RoundSummary(k, bool(status.get("entropy_gate")), status["counts"], carried, dice,
                        dict(sorted(organ_dice.items())), dict(sorted(organ_precision.items())),
                        dict(sorted(organ_ml.items())), dict(sorted(labelled_ml.items())), reasons, seconds, accepted)


@dataclass
class _Run:
    """Everything the report reads, loaded once."""

    root: Path
    config: dict | None
    dataset: PartialDataset | None
    dataset_problem: str  # why there is no dataset, when there is none
    rounds: list[RoundSummary]
    statuses: dict[int, dict]
    summary: dict | None
    names: dict[int, str] = field(default_factory=dict)

    def name(self, organ: int) -> str:
        return self.names.get(organ, str(organ))

    @cached_property
    def planned_epochs(self) -> list:
        """The epochs after which the config plans a round, as the run computes them."""
        if not self.config:
            return []
        try:
            return parse_config({k: v for k, v in self.config.items() if k != "dataset"}).round_epochs()
        except IpnpError:
            return []

    def epoch(self, k: int) -> object:
        epochs = self.planned_epochs
        return epochs[k - 1] if k <= len(epochs) else None


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/figures/*.png`` from what the run holds; return the report's path."""
    run = _load(Path(run_dir))
    figures = ensure_dir(run.root / FIGURES)
    written: set[str] = set()
    sections = [
        _header(run),
        _settings(run),
        _results(run),
        _rounds(run, figures, written),
        _training_cases(run, figures, written),
        _test_cases(run, figures, written),
    ]
    for stale in {DICE_FIGURE, TRAINING_FIGURE, TEST_FIGURE} - written:  # from an earlier report, no longer true
        (figures / stale).unlink(missing_ok=True)
    path = run.root / REPORT
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(line for section in sections for line in section))
    return path


# --- reading the run -------------------------------------------------------------------------------

def _load(root: Path) -> _Run:
    if not root.is_dir():
        raise IpnpError(f"{root}: run folder not found")
    config = _read_config(root / CONFIG)
    dataset, problem = None, f"no `{CONFIG}`, so no dataset"
    if config is not None:
        try:
            dataset, problem = PartialDataset(Path(str(config["dataset"]))), ""
        except KeyError:
            problem = f"`{CONFIG}` names no `dataset`"
        except IpnpError as exc:
            problem = str(exc)
    statuses = {k: read_json(path) for k, path in _round_status_files(root)}
    rounds = [summarize_round(k, status) for k, status in statuses.items()]
    summary_path = root / "evaluation" / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else None
    run = _Run(root, config, dataset, problem, rounds, statuses, summary)
    if dataset is not None:
        run.names = dict(dataset.organ_names)
    elif summary is not None:
        run.names = {entry["id"]: name for name, entry in summary["organs"].items()}
    return run


def _read_config(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise IpnpError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(config, dict):
        raise IpnpError(f"{path}: expected a mapping of settings, found {type(config).__name__}")
    return config


def _round_status_files(root: Path) -> list[tuple[int, Path]]:
    """Finished rounds in order; a round still being built lives under a hidden name and is not listed."""
    folder = root / "rounds"
    if not folder.is_dir():
        return []
    found = [(int(p.name), p / STATUS_FILE) for p in folder.iterdir() if p.name.isdigit() and (p / STATUS_FILE).is_file()]
    return sorted(found)


# --- text sections ---------------------------------------------------------------------------------

def _header(run: _Run) -> list[str]:
    planned = len(run.planned_epochs)
    done = f"{len(run.rounds)} of {planned} planned" if planned else str(len(run.rounds))
    lines = ["# IPnP run report", "", f"Run `{run.root.absolute()}`.", "", f"- Pseudo-labeling rounds finished: {done}."]
    if run.dataset is None:
        lines.append(f"- Dataset unavailable ({run.dataset_problem}): organs are named by id and there are no case figures.")
    else:
        lines.append(f"- Dataset `{run.dataset.root}`: {len(run.dataset.training_ids)} training and "
                     f"{len(run.dataset.test_ids)} test cases.")
    return lines + [""]


def _settings(run: _Run) -> list[str]:
    if run.config is None:
        return ["## Settings", "", f"No `{CONFIG}` in the run folder: the settings are unknown.", ""]
    lines = ["## Settings", "", "| setting | value |", "|:---|:---|"]
    lines += [f"| `{key}` | {_cell(value)} |" for key, value in _flatten(run.config)]
    return lines + [""]


def _flatten(config: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested settings as ``(dotted.key, value)`` pairs, in the config's order."""
    items = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|")


def _results(run: _Run) -> list[str]:
    lines = ["## Test-set segmentation (paper Table 1 layout)", ""]
    if run.summary is None:
        return lines + ["No evaluation yet: `evaluation/summary.json` is missing (the dataset has no `labelsTs/`, "
                        "or the run has not finished).", ""]
    if run.summary.get("manifest"):
        lines += [f"Test references are partial: organs are scored only where `{run.summary['manifest']}` lists them.", ""]
    return lines + [build_table([("this run", run.summary)]).markdown()]


def _rounds(run: _Run, figures: Path, written: set[str]) -> list[str]:
    lines = ["## Pseudo-labels per round", ""]
    if not run.rounds:
        return lines + ["No pseudo-labeling round has finished yet (no `rounds/<k>/pseudo_status.json`).", ""]
    lines += [
        "| round | after epoch | entropy gate | accepted | rejected | skipped | pseudo-labels carried | mean Dice (%) "
        "| accepted: pseudo-label / specialist Dice (%) | time (s) |",
        "|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run.rounds:
        epoch = "–" if run.epoch(r.k) is None else run.epoch(r.k)
        pair = "–" if r.accepted is None else " / ".join(map(_num, r.accepted))
        lines.append(f"| {r.k} | {epoch} | {'on' if r.gate else 'off'} | {r.counts[ACCEPTED]} | {r.counts[REJECTED]} | "
                     f"{r.counts[SKIPPED]} | {r.carried} | {_num(r.mean_dice)} | {pair} | {r.seconds:.1f} |")
    lines += ["", "Dice: pseudo-labels carried after the round against `labelsTr_full/`, mean over (case, organ) pairs. "
              "Accepted: the labels this round accepted, and the specialist's own masks of the same organs (its argmax "
              "on voxels free in the ground truth), both against `labelsTr_full/`: the first above the second is what "
              "the generalist and the refinement added.", ""]
    lines += _organ_dice(run) + _organ_size(run) + _trust(run) + _reasons(run)
    if any(r.dice for r in run.rounds):
        _dice_figure(run, figures / DICE_FIGURE)
        written.add(DICE_FIGURE)
        lines += [f"![Pseudo-label Dice per round]({FIGURES}/{DICE_FIGURE})", ""]
    return lines


def _organ_table(run: _Run, intro: str, organs: list[int], columns: list[tuple[str, Callable[[int], str]]]) -> list[str]:
    """A paragraph, then a table with a row per organ (id, name) and a (header, organ -> cell) per column."""
    lines = [intro, "", "| id | organ | " + " | ".join(h for h, _ in columns) + " |", "|---:|:---|" + "---:|" * len(columns)]
    lines += [f"| {organ} | {run.name(organ)} | " + " | ".join(cell(organ) for _, cell in columns) + " |"
              for organ in organs]
    return lines + [""]


def _organ_dice(run: _Run) -> list[str]:
    organs = sorted({o for r in run.rounds for o in r.organ_dice})
    if not organs:
        return ["No pseudo-label Dice: the dataset has no `labelsTr_full/` (complete labels of a simulation).", ""]

    def cell(r: RoundSummary, organ: int) -> str:
        if organ not in r.organ_dice:
            return "–"
        precision = f" / {np.mean(r.organ_precision[organ]):.2f}" if organ in r.organ_precision else ""
        return f"{np.mean(r.organ_dice[organ]):.2f}{precision} ({len(r.organ_dice[organ])})"

    return _organ_table(
        run, "Per organ: mean Dice (%) of the carried pseudo-labels (number of cases), and after the slash their "
             "precision (%), the share of their voxels on the organ: a pseudo-label trains where it is, so its "
             "wrong voxels are what the specialist learns from it.",
        organs, [(f"round {r.k}", partial(cell, r)) for r in run.rounds])


def _organ_size(run: _Run) -> list[str]:
    """Per organ and round, the carried pseudo-labels' median volume against the true labels' (no complete
    labels needed: on real partial data this is what shows pseudo-labels that teach over-segmentation)."""
    organs = sorted({o for r in run.rounds for o in r.organ_ml})
    labelled = run.rounds[-1].labelled_ml
    if not organs:
        return []

    def truth(organ: int) -> str:
        return f"{np.median(labelled[organ]):.2f} ({len(labelled[organ])})" if organ in labelled else "–"

    def cell(r: RoundSummary, organ: int) -> str:
        if organ not in r.organ_ml:
            return "–"
        found = float(np.median(r.organ_ml[organ]))
        ratio = f", × {found / np.median(labelled[organ]):.2f}" if organ in labelled else ""
        return f"{found:.2f}{ratio} ({len(r.organ_ml[organ])})"

    return _organ_table(
        run, "Size: median volume (mL) of the carried pseudo-labels, its ratio to the median volume of the organ in "
             "the training cases whose true labels hold it, and the number of pseudo-labels. A pseudo-label trains "
             "where it is, so pseudo-labels much larger than the true labels teach the specialist to over-segment; "
             "organs that the field of view cuts vary in size anyway.",
        organs, [("true labels", truth)] + [(f"round {r.k}", partial(cell, r)) for r in run.rounds])


def _trust(run: _Run) -> list[str]:
    """The trust test per organ and round (``refine.trust_cases``), if the run made it."""
    tests = {k: s["trust"]["organs"] for k, s in sorted(run.statuses.items()) if "trust" in s}
    if not tests:
        return []

    def cell(test: dict, organ: int) -> str:
        t = test.get(str(organ))
        if t is None or not t["cases"]:
            return "–"
        precision = f", precision {100 * t['generalist_precision']:.1f}" if "generalist_precision" in t else ""
        if t.get("specialist_precision") is not None:
            precision += f" / {100 * t['specialist_precision']:.1f}"
        text = f"{100 * t['generalist_dice']:.1f} / {100 * t['specialist_dice']:.1f}{precision} ({t['cases']})"
        return text if t["trusted"] else f"**not trusted** {text}"

    return _organ_table(
        run, "Trust test (`refine.trust_cases`): on labelled training cases, mean Dice (%) of the generalist's refined "
             "masks / of the specialist's own masks, and their precision (%), refined / specialist's (cases); **not trusted** "
             "organs got no new pseudo-label that round.",
        sorted({int(o) for t in tests.values() for o in t}), [(f"round {k}", partial(cell, t)) for k, t in tests.items()])


def _reasons(run: _Run) -> list[str]:
    rows = [(r.k, status, reason, n) for r in run.rounds for (status, reason), n in r.reasons.most_common(TOP_REASONS)]
    if not rows:
        return ["No organ was rejected or skipped.", ""]
    lines = [f"Most common reasons for rejecting or skipping an organ (up to {TOP_REASONS} per round):", "",
             "| round | status | reason | organs |", "|---:|:---|:---|---:|"]
    lines += [f"| {k} | {status} | {_cell(reason)} | {n} |" for k, status, reason, n in rows]
    return lines + [""]


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


# --- figures ---------------------------------------------------------------------------------------

def organ_colour(organ: int) -> tuple[float, float, float]:
    """A fixed colour per organ id, the same in every figure and run.

    matplotlib's tab20 holds ten hues in a dark and a light shade; the dark ones come first so that ids
    1-10 get ten distinct hues, and 11-20 their light shades.
    """
    from matplotlib import colormaps

    k = (organ - 1) % 20
    return tuple(colormaps["tab20"].colors[2 * k if k < 10 else 2 * (k - 10) + 1])


def save_figure(fig: Figure, dest: Path) -> None:
    """Write a PNG of at most MAX_FIGURE_BYTES where a lower resolution can make it so (noisy CT compresses badly)."""
    for dpi in _DPIS:
        buffer = io.BytesIO()
        # No software version in the file: the same inputs give the same bytes.
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        if buffer.tell() <= MAX_FIGURE_BYTES:
            break
    with atomic_path(dest) as tmp:
        tmp.write_bytes(buffer.getvalue())


@default_style
def _dice_figure(run: _Run, dest: Path) -> None:
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ks = [r.k for r in run.rounds]
    for organ in sorted({o for r in run.rounds for o in r.organ_dice}):
        points = [(r.k, np.mean(r.organ_dice[organ])) for r in run.rounds if organ in r.organ_dice]
        ax.plot(*zip(*points), marker="o", lw=1, ms=3, color=organ_colour(organ), label=run.name(organ))
    overall = [(r.k, r.mean_dice) for r in run.rounds if r.mean_dice is not None]
    ax.plot(*zip(*overall), marker="o", lw=2.5, color="black", label="all organs")
    ax.set_xticks(ks, [f"{k}" if run.epoch(k) is None else f"{k}\n(epoch {run.epoch(k)})" for k in ks])
    ax.set(xlabel="round", ylabel="pseudo-label Dice (%)", ylim=(0, 102), title="Pseudo-label Dice against labelsTr_full")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    save_figure(fig, dest)


@dataclass
class _CaseRow:
    """One case of a qualitative figure: a 2D image slice and one label slice per label column."""

    case_id: str
    index: int
    image: np.ndarray
    labels: list[np.ndarray | None]
    aspect: float


def _case_row(case_id: str, image_path: Path, label_paths: list[Path | None], focus: list[int],
              organs: set[int] | None) -> _CaseRow:
    """Load a case and cut the axial slice with most voxels of ``organs`` (any organ if None) in the
    ``focus`` label columns; falling back to most foreground in any column, then to the middle slice."""
    image, geometry = read_image(image_path)
    volumes = [None if p is None else _label_like(p, image.shape) for p in label_paths]
    axis = _axial_axis(geometry)
    focused = [volumes[i] for i in focus if volumes[i] is not None]
    index = _pick_slice(focused, organs, axis)
    if index is None:
        index = _pick_slice([v for v in volumes if v is not None], None, axis)
    if index is None:
        index = image.shape[axis] // 2
    rest = [s for a, s in enumerate(geometry.spacing_zyx) if a != axis]
    return _CaseRow(case_id, index, np.take(image, index, axis).astype(np.float32),
                    [None if v is None else np.take(v, index, axis) for v in volumes], rest[0] / rest[1])


def _label_like(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    label, _ = read_label(path)
    if label.shape != shape:
        raise IpnpError(f"{path}: shape {label.shape} differs from the image's {shape}")
    return label


def _axial_axis(geometry: Geometry) -> int:
    try:
        return anatomical_axes(geometry.direction).axial
    except ValueError:  # too oblique to tell: the array's first axis is the usual slice axis
        return AnatomicalAxes().axial


def _pick_slice(volumes: list[np.ndarray], organs: set[int] | None, axis: int) -> int | None:
    """The slice along ``axis`` with the most voxels of ``organs`` summed over ``volumes`` (the middle one of
    equals, for a representative view), or None if no slice has any."""
    counts = 0
    for volume in volumes:
        mask = volume > 0 if organs is None else np.isin(volume, sorted(organs))
        counts = counts + np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).sum(axis=1)
    if np.isscalar(counts) or counts.max() == 0:
        return None
    best = np.flatnonzero(counts == counts.max())
    return int(best[len(best) // 2])


@default_style
def _case_figure(rows: list[_CaseRow], titles: list[str], run: _Run, dest: Path) -> None:
    """Rows of cases, columns of image then label maps over the image, coloured per organ, with a legend."""
    lut = np.zeros((256, 4), np.float32)
    for organ in range(1, 256):
        lut[organ] = (*organ_colour(organ), 0.55)
    columns = len(titles) + 1
    # Panels as tall as the widest slice needs, so that the rows stack without gaps.
    height = _PANEL_INCHES * max(row.aspect * row.image.shape[0] / row.image.shape[1] for row in rows)
    fig = Figure(figsize=(_PANEL_INCHES * columns, (height + 0.3) * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    present: set[int] = set()
    for row, ax_row in zip(rows, axes):
        low, high = np.percentile(row.image, (0.5, 99.5))
        for col, (ax, label) in enumerate(zip(ax_row, [None, *row.labels])):
            ax.imshow(row.image, cmap="gray", vmin=low, vmax=high, aspect=row.aspect)
            if col and label is None:
                ax.text(0.5, 0.5, "not available", transform=ax.transAxes, ha="center", color="white")
            elif col:
                ax.imshow(lut[label], aspect=row.aspect, interpolation="nearest")
                present |= set(np.unique(label).tolist()) - {0}
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(f"{row.case_id}\nslice {row.index}")
    for ax, title in zip(axes[0], ["image", *titles]):
        ax.set_title(title, fontsize="medium")
    handles = [Patch(color=organ_colour(o), label=f"{o} {run.name(o)}") for o in sorted(present)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize="small")
    save_figure(fig, dest)


def _shown_rounds(ks: list[int]) -> list[int]:
    """At most MAX_ROUNDS_SHOWN rounds, evenly spread, always the first and the last."""
    picks = np.unique(np.linspace(0, len(ks) - 1, min(len(ks), MAX_ROUNDS_SHOWN)).round().astype(int))
    return [ks[i] for i in picks]


def _training_cases(run: _Run, figures: Path, written: set[str]) -> list[str]:
    lines = ["## Training cases: partial labels and pseudo-labels", ""]
    if run.dataset is None or not run.dataset.training_ids:
        return lines + ["No figure: the dataset's training cases are unavailable.", ""]
    ds = run.dataset
    ks = _shown_rounds(sorted(run.statuses)) if run.statuses else []
    carried = _carried_organs(run)
    # Cases with the most pseudo-labeled organs show the most; ties and runs without rounds go by case id.
    chosen = sorted(ds.training_ids, key=lambda c: (-len(carried.get(c, ())), c))[:MAX_CASES]
    full = any(ds.case(c).full_label_path is not None for c in chosen)
    titles = (["full labels"] if full else []) + ["partial labels"] + [f"round {k}" + _epoch_note(run, k) for k in ks]
    rows = []
    for case_id in chosen:
        case = ds.case(case_id)
        paths = ([case.full_label_path] if full else []) + [case.label_path]
        paths += [_existing(run.root / "rounds" / str(k) / "labels" / f"{case_id}{ds.file_ending}") for k in ks]
        focus = list(range(len(paths) - len(ks), len(paths)))
        rows.append(_case_row(case_id, case.image_paths[0], paths, focus, carried.get(case_id) or None))
    _case_figure(rows, titles, run, figures / TRAINING_FIGURE)
    written.add(TRAINING_FIGURE)
    missing = "" if full else " The dataset has no `labelsTr_full/`, so the complete labels are not shown."
    if not ks:
        missing += " No round has finished, so there are no pseudo-labels yet."
    return lines + [
        f"Axial slice through the pseudo-labeled organs of {len(rows)} training cases (the ones with the most "
        f"pseudo-labeled organs); rounds shown: {', '.join(map(str, ks)) or 'none'}.{missing}",
        "",
        f"![Training cases]({FIGURES}/{TRAINING_FIGURE})",
        "",
    ]


def _carried_organs(run: _Run) -> dict[str, set[int]]:
    """Per training case, the organs that carried a pseudo-label after any round."""
    carried: dict[str, set[int]] = {}
    for status in run.statuses.values():
        for case_id, entry in status["cases"].items():
            organs = {int(o) for o, outcome in entry["organs"].items() if outcome["pseudo_label"]}
            carried.setdefault(case_id, set()).update(organs)
    return carried


def _epoch_note(run: _Run, k: int) -> str:
    return "" if run.epoch(k) is None else f" (epoch {run.epoch(k)})"


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _test_cases(run: _Run, figures: Path, written: set[str]) -> list[str]:
    lines = ["## Test cases: predictions", ""]
    predictions = run.root / "predictions"
    if run.dataset is None:
        return lines + ["No figure: the dataset's test images are unavailable.", ""]
    ending = run.dataset.file_ending
    chosen = [c for c in run.dataset.test_ids if (predictions / f"{c}{ending}").is_file()][:MAX_CASES]
    if not chosen:
        return lines + ["No figure: no predictions of the test images yet (`predictions/`).", ""]
    cases = [run.dataset.case(c, "test") for c in chosen]
    reference = any(case.label_path is not None for case in cases)
    rows = []
    for case in cases:
        paths = ([case.label_path] if reference else []) + [predictions / f"{case.case_id}{ending}"]
        rows.append(_case_row(case.case_id, case.image_paths[0], paths, [0], None))
    _case_figure(rows, (["reference (labelsTs)"] if reference else []) + ["prediction"], run, figures / TEST_FIGURE)
    written.add(TEST_FIGURE)
    note = "" if reference else " The dataset has no `labelsTs/`, so no reference is shown."
    return lines + [
        f"Axial slice with the most labeled voxels of the first {len(rows)} predicted test cases.{note}",
        "",
        f"![Test cases]({FIGURES}/{TEST_FIGURE})",
        "",
    ]
