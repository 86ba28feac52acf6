"""``ipnp benchmark --seed 0 1 2``: one benchmark repeated over seeds, and what the seeds agree on.

At the ``quick`` budget one seed moves single organs by tens of DSC and a method's mean by ten (BENCHMARKS.md),
so one table cannot separate methods a few DSC apart. Each seed is a complete benchmark in
``OUT/seed<S>/`` (its own simulated partial labels and trainings, resumable on its own). After every seed,
the summary is rewritten from every seed folder's ``results.json``::

    OUT/seeds.md    per column: the mean DSC of each seed, their mean and standard deviation; paired
                    differences between the methods of one ratio; ratios to full-labels; Table 1 of the
                    per-organ means over seeds; each organ's mean ± sd over seeds
    OUT/seeds.csv   one row per column and seed: mean DSC (%) and mean HD95 (mm)
    OUT/seeds.json  the same records, the paired differences and the averaged Table 1
    OUT/seeds.png   each column's seeds as points beside their mean

Within a seed every method trains on the same simulated labels with the same seed, so the difference of
two methods is taken seed by seed ("paired"), and the summary says in how many seeds it has one sign.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from ipnp.benchmark import FULL_LABELS, RESULTS_JSON, SETTINGS_FILE, Column, run_benchmark, table_order
from ipnp.data.io import atomic_path, read_json, write_csv, write_json
from ipnp.errors import IpnpError
from ipnp.evaluation.table import build_table
from ipnp.report import default_style, save_figure

SEED_PREFIX = "seed"
SEEDS_MD, SEEDS_CSV, SEEDS_JSON, SEEDS_PNG = "seeds.md", "seeds.csv", "seeds.json", "seeds.png"


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"{SEED_PREFIX}{seed}"


def run_seeds(
    dataset: str | os.PathLike, out: str | os.PathLike, seeds: list[int], share_from: str | os.PathLike | None = None,
    **settings,
) -> Path:
    """Run :func:`ipnp.benchmark.run_benchmark` once per seed into ``out/seed<S>``; return ``out/seeds.md``.

    ``settings`` are run_benchmark's keyword arguments other than ``seed``; ``share_from``, a multi-seed
    benchmark, gives each seed its own ``share_from/seed<S>``.
    """
    out = Path(out)
    if len(set(seeds)) != len(seeds):
        raise IpnpError(f"--seed {' '.join(map(str, seeds))}: a seed is named twice")
    if (out / SETTINGS_FILE).is_file():
        raise IpnpError(f"{out}: holds a single-seed benchmark; give its one --seed or choose another --out")
    for seed in seeds:
        source = None if share_from is None else seed_dir(Path(share_from), seed)
        run_benchmark(dataset, seed_dir(out, seed), seed=seed, share_from=source, **settings)
        write_seed_summary(out)
    return out / SEEDS_MD


@dataclass(frozen=True)
class SeedScore:
    """One column's result in one seed's benchmark."""

    title: str
    method: str
    keep: float | None
    seed: int
    summary: dict  # ipnp.evaluation.evaluate's summary of that run

    @property
    def dsc(self) -> float:
        return 100.0 * self.summary["mean_dsc"]


def read_seed_scores(out: Path) -> list[SeedScore]:
    """Every finished column of every ``out/seed<S>/results.json`` (in seed order); other settings are an error."""
    scores, settings = [], None
    for folder in sorted(out.glob(f"{SEED_PREFIX}*/"), key=lambda p: (len(p.name), p.name)):
        path = folder / RESULTS_JSON
        if not path.is_file():
            continue  # a seed whose first run has not finished
        results = read_json(path)
        these = (results["dataset"], results["profile"])
        if settings is not None and these != settings:
            raise IpnpError(f"{path}: a benchmark of {these[0]} ({these[1]}), not of {settings[0]} ({settings[1]})")
        settings = these
        scores += [SeedScore(r["title"], r["method"], r["keep"], results["seed"], r["summary"]) for r in results["runs"]]
    return sorted(scores, key=lambda s: (table_order(Column(s.method, s.keep)), s.seed))


def _by_title(scores: list[SeedScore]) -> dict[str, list[SeedScore]]:
    columns: dict[str, list[SeedScore]] = {}
    for score in scores:
        columns.setdefault(score.title, []).append(score)
    return columns


def column_stats(scores: list[SeedScore]) -> list[dict]:
    """Per column: the seeds, each seed's mean DSC (%), and their mean and sample standard deviation."""
    rows = []
    for title, found in _by_title(scores).items():
        values = [s.dsc for s in found]
        rows.append({
            "title": title, "seeds": [s.seed for s in found], "dsc": values, "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
        })
    return rows


def paired_differences(scores: list[SeedScore]) -> list[dict]:
    """``a - b`` in mean DSC, seed by seed, for every two methods of one ratio (``a`` later in Table 1's order)."""
    columns = _by_title(scores)
    pairs = []
    titles = list(columns)
    for i, first in enumerate(titles):
        for later in titles[i + 1:]:
            a, b = columns[later][0], columns[first][0]
            if a.keep != b.keep or FULL_LABELS in (a.method, b.method):
                continue
            by_seed_b = {s.seed: s.dsc for s in columns[first]}
            shared = [(s.seed, s.dsc - by_seed_b[s.seed]) for s in columns[later] if s.seed in by_seed_b]
            if shared:
                differences = [d for _, d in shared]
                pairs.append({
                    "a": later, "b": first, "seeds": [seed for seed, _ in shared], "difference": differences,
                    "mean": statistics.fmean(differences), "a_higher": sum(d > 0 for d in differences),
                })
    return pairs


def full_label_ratios(scores: list[SeedScore]) -> list[dict]:
    """Each column's mean DSC over the same seed's full-labels DSC, averaged over the seeds that have both."""
    full = {s.seed: s.dsc for s in scores if s.method == FULL_LABELS}
    rows = []
    for title, found in _by_title(scores).items():
        ratios = [s.dsc / full[s.seed] for s in found if s.seed in full and full[s.seed] > 0]
        if ratios and found[0].method != FULL_LABELS:
            rows.append({"title": title, "ratio": ratios, "mean": statistics.fmean(ratios)})
    return rows


def mean_summary(found: list[SeedScore]) -> dict:
    """An evaluation summary whose organ DSC and HD95 are the means over ``found``'s seeds."""
    organs: dict[str, list[dict]] = {}
    for score in found:
        for name, entry in score.summary["organs"].items():
            organs.setdefault(name, []).append(entry)

    def known(entries: list[dict], key: str) -> list[float]:
        return [e[key] for e in entries if e[key] is not None]

    def mean(entries: list[dict], key: str) -> float | None:
        values = known(entries, key)
        return statistics.fmean(values) if values else None

    def sd(entries: list[dict]) -> float | None:
        values = known(entries, "dsc")
        return statistics.stdev(values) if len(values) > 1 else None

    return {
        "cases": found[0].summary.get("cases"),
        "mean_dsc": statistics.fmean(s.summary["mean_dsc"] for s in found),
        "mean_hd95": mean([s.summary for s in found], "mean_hd95"),
        "organs": {
            name: {"id": entries[0]["id"], "dsc": mean(entries, "dsc"), "dsc_sd": sd(entries), "hd95": mean(entries, "hd95"),
                   "n": max(e["n"] for e in entries)}
            for name, entries in organs.items()
        },
    }


def write_seed_summary(out: str | os.PathLike) -> Path:
    """(Re)write ``seeds.md``, ``.csv``, ``.json`` and ``.png`` from every seed folder in ``out``; return seeds.md."""
    out = Path(out)
    scores = read_seed_scores(out)
    if not scores:
        raise IpnpError(f"{out}: no finished run in any {SEED_PREFIX}<S>/ folder")
    stats, pairs, ratios = column_stats(scores), paired_differences(scores), full_label_ratios(scores)
    means = [(title, mean_summary(found)) for title, found in _by_title(scores).items()]
    table = build_table(means)
    spread = organ_spread(means)
    write_csv(["title", "method", "keep", "seed", "mean DSC (%)", "mean HD95 (mm)"],
              [[s.title, s.method, "" if s.keep is None else s.keep, s.seed, s.dsc, s.summary["mean_hd95"]]
               for s in scores], out / SEEDS_CSV)
    write_json({"columns": stats, "paired_differences": pairs, "full_label_ratios": ratios,
                "table": table.records(), "organ_spread": spread}, out / SEEDS_JSON)
    _seed_figure(scores, out / SEEDS_PNG)
    with atomic_path(out / SEEDS_MD) as tmp:
        tmp.write_text(_markdown(out, stats, pairs, ratios) + "\n## Per organ, mean over seeds\n\n" + table.markdown()
                       + _spread_markdown(spread, [title for title, _ in means]))
    return out / SEEDS_MD


def _markdown(out: Path, stats: list[dict], pairs: list[dict], ratios: list[dict]) -> str:
    lines = [f"# Benchmark over seeds\n\nFolders: `{out}/{SEED_PREFIX}<S>/` (each with its own table.md).\n",
             "## Mean DSC (%) per column\n", "| column | seeds | DSC per seed | mean | sd |", "| :--- | :--- | :--- | ---: | ---: |"]
    lines += [f"| {r['title']} | {' '.join(map(str, r['seeds']))} | {' / '.join(f'{v:.2f}' for v in r['dsc'])} | "
              f"{r['mean']:.2f} | {_fmt(r['sd'])} |" for r in stats]
    if pairs:
        lines += ["\n## Paired differences (a − b, mean DSC, seed by seed)\n",
                  "| a | b | seeds | a − b per seed | mean | a higher in |", "| :--- | :--- | :--- | :--- | ---: | ---: |"]
        lines += [f"| {p['a']} | {p['b']} | {' '.join(map(str, p['seeds']))} | "
                  f"{' / '.join(f'{d:+.2f}' for d in p['difference'])} | {p['mean']:+.2f} | "
                  f"{p['a_higher']} of {len(p['seeds'])} |" for p in pairs]
    if ratios:
        lines += ["\n## Ratio to full-labels (the same seed's)\n", "| column | per seed | mean |", "| :--- | :--- | ---: |"]
        lines += [f"| {r['title']} | {' / '.join(f'{v:.3f}' for v in r['ratio'])} | {r['mean']:.3f} |" for r in ratios]
    return "\n".join(lines) + "\n"


def organ_spread(means: list[tuple[str, dict]]) -> list[dict]:
    """Per organ (by id), each column's DSC (%) mean and sample sd over seeds, from :func:`mean_summary` s.

    One seed moves a small organ by tens of DSC at the ``quick`` budget, so a per-organ difference between
    two methods means little without its spread.
    """
    rows: dict[int, dict] = {}
    for title, summary in means:
        for name, entry in summary["organs"].items():
            row = rows.setdefault(entry["id"], {"organ_id": entry["id"], "organ": name, "columns": {}})
            row["columns"][title] = {
                "mean": None if entry["dsc"] is None else 100.0 * entry["dsc"],
                "sd": None if entry["dsc_sd"] is None else 100.0 * entry["dsc_sd"],
            }
    return [rows[i] for i in sorted(rows)]


def _spread_markdown(spread: list[dict], titles: list[str]) -> str:
    def cell(value: dict | None) -> str:
        if value is None or value["mean"] is None:
            return "–"
        return f"{value['mean']:.1f}" + ("" if value["sd"] is None else f" ± {value['sd']:.1f}")

    lines = ["\n## Per organ DSC (%), mean ± sd over seeds\n", "| id | organ | " + " | ".join(titles) + " |",
             "| ---: | :--- | " + " | ".join("---:" for _ in titles) + " |"]
    lines += [f"| {r['organ_id']} | {r['organ']} | " + " | ".join(cell(r["columns"].get(t)) for t in titles) + " |"
              for r in spread]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


@default_style
def _seed_figure(scores: list[SeedScore], dest: Path) -> None:
    from matplotlib.figure import Figure

    columns = _by_title(scores)
    seeds = sorted({s.seed for s in scores})
    fig = Figure(figsize=(max(4.0, 1.1 * len(columns) + 1.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    for x, found in enumerate(columns.values()):
        ax.hlines(statistics.fmean(s.dsc for s in found), x - 0.3, x + 0.3, colors="black")
        for s in found:  # side by side, so that two seeds with one score stay visible
            i = seeds.index(s.seed)
            ax.scatter(x + 0.08 * (i - (len(seeds) - 1) / 2), s.dsc, color=f"C{i % 10}", s=18, zorder=3)
    for i, seed in enumerate(seeds):
        ax.scatter([], [], color=f"C{i % 10}", s=18, label=f"seed {seed}")
    ax.set_xticks(range(len(columns)), list(columns), rotation=30, ha="right")
    ax.set_ylabel("mean DSC (%)")
    ax.set_title("Each seed's mean DSC; bar: mean over seeds")
    ax.legend(fontsize="small", frameon=False)
    save_figure(fig, dest)
