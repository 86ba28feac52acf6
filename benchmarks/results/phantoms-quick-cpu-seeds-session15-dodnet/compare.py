"""Phantoms, 33 %: dodnet with the controller's AdamW rate scaled (session 15) against session 13's dodnet and partial-sup."""
import json
from pathlib import Path

R = Path(__file__).resolve().parent.parent


def table(path: Path, column: str) -> dict[str, float]:
    """{organ: DSC} of one column of a benchmark's results.json."""
    rows = json.loads(path.read_text())["table"]
    return {row["organ"]: row["columns"][column]["dsc"] for row in rows if row["organ_id"] is not None and column in row["columns"]}


columns = {
    "partial-sup": [table(R / f"phantoms-quick-cpu-seeds-session7/seed{s}/results.json", "partial-sup 33%") for s in range(3)],
    "dodnet s13": [table(R / f"phantoms-quick-cpu-seeds-session13-dodnet/seed{s}-dodnet/results.json", "dodnet 33%") for s in range(3)],
    "dodnet s15": [table(R / f"phantoms-quick-cpu-seeds-session15-dodnet/seed{s}-dodnet/results.json", "dodnet 33%") for s in range(3)],
}
organs = list(columns["partial-sup"][0])


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


print("| organ | " + " | ".join(f"{c} (s0 / s1 / s2, mean)" for c in columns) + " | s15 − s13 | s15 − partial-sup |")
print("|:---|" + "---|" * len(columns) + "---:|---:|")
for organ in organs + ["**Average**"]:
    cells, means = [], {}
    for name, seeds in columns.items():
        per_seed = [mean(t.values()) if organ.startswith("**") else t[organ] for t in seeds]
        means[name] = mean(per_seed)
        cells.append(" / ".join(f"{v:.2f}" for v in per_seed) + f" ({means[name]:.2f})")
    print(f"| {organ} | " + " | ".join(cells) + f" | {means['dodnet s15'] - means['dodnet s13']:+.2f} | {means['dodnet s15'] - means['partial-sup']:+.2f} |")
for s in range(3):
    new, old, psup = (mean(columns[c][s].values()) for c in ("dodnet s15", "dodnet s13", "partial-sup"))
    print(f"seed {s}: s15 − s13 {new - old:+.2f}, s15 − partial-sup {new - psup:+.2f}")
