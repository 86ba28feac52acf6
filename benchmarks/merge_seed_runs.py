"""Summarise benchmark runs made one column at a time (e.g. in parallel) as ``ipnp benchmark --seed ...`` would.

Each RUN is the ``--out`` folder of one ``ipnp benchmark ... --seed S`` call; the runs of one seed are merged
into ``OUT/seed<S>/results.json`` and ``OUT/seeds.md`` (with .csv, .json, .png) is written from them:

    python benchmarks/merge_seed_runs.py X3seeds X3-full-labels X3-marginal X3-ipnp X3s1-marginal X3s1-ipnp
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ipnp.benchmark import RESULTS_JSON
from ipnp.benchmark_seeds import seed_dir, write_seed_summary
from ipnp.data.io import read_json, write_json
from ipnp.errors import IpnpError


def merge_by_seed(runs: list[Path]) -> dict[int, dict]:
    """The runs' results.json merged by seed; a column twice in one seed, or another dataset, is an error."""
    merged: dict[int, dict] = {}
    for run in runs:
        results = read_json(run / RESULTS_JSON)
        seed = results["seed"]
        if seed not in merged:
            merged[seed] = {**results, "command": [], "runs": [], "table": []}
        elif (results["dataset"], results["profile"]) != (merged[seed]["dataset"], merged[seed]["profile"]):
            raise IpnpError(f"{run}: a benchmark of another dataset or profile than the other runs of seed {seed}")
        titles = {r["title"] for r in merged[seed]["runs"]}
        if clash := titles & {r["title"] for r in results["runs"]}:
            raise IpnpError(f"{run}: column {sorted(clash)[0]!r} of seed {seed} is in two runs")
        merged[seed]["command"].append(results["command"])
        merged[seed]["runs"] += results["runs"]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for seed<S>/results.json and seeds.md")
    parser.add_argument("runs", type=Path, nargs="+", help="benchmark --out folders, each with results.json")
    args = parser.parse_args()
    try:
        merged = merge_by_seed(args.runs)
    except IpnpError as exc:
        raise SystemExit(f"error: {exc}") from None
    for seed, results in merged.items():
        write_json(results, seed_dir(args.out, seed) / RESULTS_JSON)
    print(write_seed_summary(args.out))


if __name__ == "__main__":
    main()
