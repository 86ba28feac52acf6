"""The layout of the paper's Table 1: per-organ DSC (%) and HD95 (mm), one column pair per method.

Rows are the organs by label id, then **Average**; each column is one ``(title, summary)`` where the
summary is what :func:`ipnp.evaluation.evaluate.evaluate_folders` returns. A column that does not score
an organ shows "–". Because partially labeled test sets score organs on different numbers of cases, every
cell keeps its ``n``: the cases behind an organ's mean, or in the Average row the organs behind the average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

MISSING = "–"


@dataclass(frozen=True)
class Cell:
    """One method's scores for one row; ``None`` where the method has no score."""

    dsc: float | None  # percent
    hd95: float | None  # mm
    n: int | None


@dataclass(frozen=True)
class Row:
    organ_id: int | None  # None for the Average row
    organ: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Table:
    titles: tuple[str, ...]
    cases: tuple[int | None, ...]  # test cases behind each column
    rows: tuple[Row, ...]

    def markdown(self) -> str:
        """The table as markdown, with a footnote saying what ``n`` and Average mean."""
        header = ["id", "organ", "n"] + [f"{t} {part}" for t in self.titles for part in ("DSC (%)", "HD95 (mm)")]
        lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---:", ":---"] + ["---:"] * (len(header) - 2)) + " |"]
        for row in self.rows:
            organ = f"**{row.organ}**" if row.organ_id is None else row.organ
            scores = [_fmt(value, 2) for cell in row.cells for value in (cell.dsc, cell.hd95)]
            cells = ["" if row.organ_id is None else str(row.organ_id), organ, _counts(row.cells)] + scores
            lines.append("| " + " | ".join(cells) + " |")
        cases = ", ".join(f"{t}: {_fmt(c, 0)}" for t, c in zip(self.titles, self.cases))
        lines += [
            "",
            "n: the test cases that score the organ (one value per column, in column order, where the columns "
            "differ); in the Average row, the organs averaged. Average: the mean of the per-organ means, as in "
            f"the paper's Table 1. {MISSING}: not scored. Test cases per column: {cases}.",
        ]
        return "\n".join(lines) + "\n"

    def csv(self) -> tuple[list[str], list[list[object]]]:
        """Header and rows for :func:`ipnp.data.io.write_csv`; empty strings where a score is missing."""
        header = ["organ_id", "organ"] + [f"{t} {part}" for t in self.titles for part in ("DSC (%)", "HD95 (mm)", "n")]
        rows = [
            ["" if row.organ_id is None else row.organ_id, row.organ]
            + ["" if value is None else value for cell in row.cells for value in (cell.dsc, cell.hd95, cell.n)]
            for row in self.rows
        ]
        return header, rows

    def records(self) -> list[dict]:
        """The rows as JSON-ready dicts: ``{"organ_id", "organ", "columns": {title: {"dsc", "hd95", "n"}}}``."""
        return [
            {
                "organ_id": row.organ_id,
                "organ": row.organ,
                "columns": {t: {"dsc": c.dsc, "hd95": c.hd95, "n": c.n} for t, c in zip(self.titles, row.cells)},
            }
            for row in self.rows
        ]


def build_table(columns: Sequence[tuple[str, dict]]) -> Table:
    """Table 1 from ``(column title, evaluation summary)`` pairs; organs are the union over the columns."""
    titles = tuple(title for title, _ in columns)
    if len(set(titles)) != len(titles):
        raise ValueError(f"column titles must differ: {titles}")
    by_id: dict[int, dict[str, dict]] = {}  # organ id -> column title -> that column's organ entry
    names: dict[int, str] = {}
    for title, summary in columns:
        for name, entry in summary.get("organs", {}).items():
            names.setdefault(entry["id"], name)
            by_id.setdefault(entry["id"], {})[title] = entry
    rows = [
        Row(organ, names[organ], tuple(_organ_cell(by_id[organ].get(title)) for title in titles)) for organ in sorted(by_id)
    ]
    rows.append(Row(None, "Average", tuple(_average_cell(summary) for _, summary in columns)))
    return Table(titles, tuple(summary.get("cases") for _, summary in columns), tuple(rows))


def _organ_cell(entry: dict | None) -> Cell:
    if entry is None:
        return Cell(None, None, None)
    return Cell(_percent(entry["dsc"]), entry["hd95"], entry["n"])


def _average_cell(summary: dict) -> Cell:
    averaged = sum(1 for entry in summary.get("organs", {}).values() if entry["n"])
    return Cell(_percent(summary.get("mean_dsc")), summary.get("mean_hd95"), averaged)


def _percent(dsc: float | None) -> float | None:
    return None if dsc is None else 100.0 * dsc


def _counts(cells: tuple[Cell, ...]) -> str:
    """One ``n`` when every column agrees, else each column's ``n`` joined by "/"."""
    values = [_fmt(cell.n, 0) for cell in cells]
    return values[0] if len(set(values)) == 1 else "/".join(values)


def _fmt(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"
