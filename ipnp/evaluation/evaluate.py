"""``ipnp evaluate``: score a folder of predicted label maps against a folder of reference label maps.

Cases are the reference files ``<case><ending>`` (nnU-Net naming); each needs a prediction of the same
name, shape and geometry. Organs come from a ``dataset.json`` (``--labels``, else one in the prediction
folder, which ``nnUNetv2_predict`` writes, else one beside the reference folder), or are the ids present.
With a manifest (``partial_labels.json``) a case is scored only on the organs it lists. Scores and their
conventions are those of :mod:`ipnp.evaluation.metrics`; averages are described in ``docs/evaluation.md``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ipnp.data.dataset import DATASET_JSON, parse_manifest, read_label
from ipnp.data.io import atomic_path, ensure_dir, read_json, refuse_output_inside, write_csv, write_json
from ipnp.errors import IpnpError
from ipnp.evaluation.metrics import score_case

log = logging.getLogger(__name__)

# Label-map formats SimpleITK reads and nnU-Net writes.
LABEL_ENDINGS = (".nii.gz", ".nrrd", ".nii", ".mha")
PER_CASE_CSV, SUMMARY_JSON, SUMMARY_MD = "per_case.csv", "summary.json", "summary.md"
CSV_COLUMNS = ("case", "organ_id", "organ", "dsc", "hd95_mm", "ref_voxels", "pred_voxels")


@dataclass(frozen=True)
class _Score:
    case: str
    organ: int
    dsc: float
    hd95: float
    ref_voxels: int
    pred_voxels: int


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
) -> dict:
    """Score every case of ``gt_dir`` against ``pred_dir``; write the results to ``out_dir``.

    Writes ``per_case.csv``, ``summary.json`` and ``summary.md`` and returns the summary. ``manifest`` is a
    ``partial_labels.json``: organs a case does not list are not scored for it; unlisted cases are fully
    labeled. ``labels`` is a ``dataset.json`` giving organ ids and names.
    """
    pred_dir, gt_dir, out_dir = Path(pred_dir), Path(gt_dir), Path(out_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise IpnpError(f"{folder}: folder not found")
    refuse_output_inside(out_dir, pred_dir, gt_dir)
    ending, cases = _reference_cases(gt_dir)
    # Check every prediction exists before the slow part starts.
    missing = [c for c in cases if not (pred_dir / f"{c}{ending}").is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more cases)" if len(missing) > 1 else ""
        raise IpnpError(f"{pred_dir / f'{missing[0]}{ending}'}: no prediction for case {missing[0]}{more}")
    names = _organ_names(labels, pred_dir, gt_dir)
    labeled = _read_manifest(Path(manifest), names) if manifest is not None else {}

    scores, present = [], set()
    for case in tqdm(cases, desc="evaluate", unit="case"):
        ref_path, pred_path = gt_dir / f"{case}{ending}", pred_dir / f"{case}{ending}"
        ref, geometry = read_label(ref_path)
        pred, pred_geometry = read_label(pred_path)
        if pred.shape != ref.shape:
            raise IpnpError(f"{pred_path}: shape {pred.shape} differs from {ref.shape} of the reference {ref_path}")
        if problem := geometry.mismatch(pred_geometry):
            raise IpnpError(f"{pred_path}: {problem} of the reference {ref_path}")
        pred_n, ref_n = _voxel_counts(pred), _voxel_counts(ref)
        ids = {int(i) for i in np.flatnonzero(pred_n + ref_n)} - {0}
        present |= ids
        organs = [o for o in (sorted(ids) if names is None else names) if case not in labeled or o in labeled[case]]
        for organ, (dsc, hd) in score_case(pred, ref, geometry.spacing_zyx, organs).items():
            scores.append(_Score(case, organ, dsc, hd, int(ref_n[organ]), int(pred_n[organ])))

    if names is None:
        names = {o: str(o) for o in sorted(present)}
        # An organ found only in other cases is absent from both maps here: score it as such.
        scored = {(s.case, s.organ) for s in scores}
        scores += [
            _Score(c, o, 1.0, 0.0, 0, 0)
            for c in cases
            for o in names
            if (c, o) not in scored and (c not in labeled or o in labeled[c])
        ]
        scores.sort(key=lambda s: (s.case, s.organ))
    elif undeclared := sorted(present - names.keys()):
        log.warning("label ids %s occur in the label maps but not in dataset.json; they are not scored", undeclared)

    summary = _summarize(scores, names, cases, pred_dir, gt_dir, manifest)
    ensure_dir(out_dir)
    rows = [[s.case, s.organ, names[s.organ], f"{s.dsc:.6f}", f"{s.hd95:.4f}", s.ref_voxels, s.pred_voxels] for s in scores]
    write_csv(CSV_COLUMNS, rows, out_dir / PER_CASE_CSV)
    write_json(summary, out_dir / SUMMARY_JSON)
    with atomic_path(out_dir / SUMMARY_MD) as tmp:
        tmp.write_text(summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    """The summary as a markdown table: one row per organ, then the average over organs."""
    lines = [
        "# Evaluation",
        "",
        f"{summary['cases']} cases; predictions `{summary['pred_dir']}`, references `{summary['gt_dir']}`"
        + (f", manifest `{summary['manifest']}`" if summary["manifest"] else "")
        + ".",
        "",
        "| id | organ | DSC | HD95 (mm) | cases |",
        "|---:|:---|---:|---:|---:|",
    ]
    for name, organ in summary["organs"].items():
        lines.append(f"| {organ['id']} | {name} | {_fmt(organ['dsc'], 4)} | {_fmt(organ['hd95'], 2)} | {organ['n']} |")
    averaged = sum(organ["n"] > 0 for organ in summary["organs"].values())
    lines += [
        f"| | **Average** | **{_fmt(summary['mean_dsc'], 4)}** | **{_fmt(summary['mean_hd95'], 2)}** | |",
        "",
        f"Average: the mean of the per-organ means over the {averaged} organs scored in at least one case.",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _summarize(
    scores: list[_Score],
    names: dict[int, str],
    cases: list[str],
    pred_dir: Path,
    gt_dir: Path,
    manifest: str | os.PathLike | None,
) -> dict:
    organs = {}
    for organ, name in names.items():
        mine = [s for s in scores if s.organ == organ]
        organs[name] = {
            "id": organ,
            "dsc": _mean([s.dsc for s in mine]),
            "hd95": _mean([s.hd95 for s in mine]),
            "n": len(mine),
        }
    # Each organ weighs the same in the average, however many cases label it (the paper's "Average").
    scored = [o for o in organs.values() if o["n"]]
    return {
        "mean_dsc": _mean([o["dsc"] for o in scored]),
        "mean_hd95": _mean([o["hd95"] for o in scored]),
        "cases": len(cases),
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "manifest": None if manifest is None else str(manifest),
        "organs": organs,
    }


def _mean(values: list[float]) -> float | None:
    # None, not NaN: it is what JSON can hold.
    return float(np.mean(values)) if values else None


def _voxel_counts(label: np.ndarray) -> np.ndarray:
    """Voxels per id 0..255 of a uint8 label map."""
    # bincount copies its input to a wide integer type; slice by slice that copy stays small.
    return sum(np.bincount(plane.ravel(), minlength=256) for plane in label)


def _reference_cases(gt_dir: Path) -> tuple[str, list[str]]:
    """The reference folder's file ending and its case ids, sorted."""
    endings = {}
    for name in os.listdir(gt_dir):
        ending = next((e for e in LABEL_ENDINGS if name.endswith(e)), None)
        if ending and not name.startswith(".") and len(name) > len(ending):
            endings.setdefault(ending, []).append(name[: -len(ending)])
    if not endings:
        raise IpnpError(f"{gt_dir}: no label maps ({', '.join('*' + e for e in LABEL_ENDINGS)})")
    if len(endings) > 1:
        raise IpnpError(f"{gt_dir}: label maps with different file endings ({', '.join(sorted(endings))})")
    (ending, cases), = endings.items()
    return ending, sorted(cases)


def _organ_names(labels: str | os.PathLike | None, pred_dir: Path, gt_dir: Path) -> dict[int, str] | None:
    """Organ id -> name from ``labels`` or a dataset.json found beside the inputs; None if there is none."""
    if labels is None:
        found = [p for p in (pred_dir / DATASET_JSON, gt_dir.resolve().parent / DATASET_JSON) if p.is_file()]
        if not found:
            log.info("no %s in %s or beside %s: organs are the label ids present", DATASET_JSON, pred_dir, gt_dir)
            return None
        labels = found[0]
        log.info("organ names from %s", labels)
    data = read_json(labels)
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise IpnpError(f"{labels}: missing 'labels' (organ name -> id)")
    names = {}
    for name, value in data["labels"].items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise IpnpError(f"{labels}: label '{name}' has id {value!r}; ids must be integers in 0..255 (no regions)")
        if value in names:
            raise IpnpError(f"{labels}: labels '{names[value]}' and '{name}' share id {value}")
        names[value] = name
    return {i: names[i] for i in sorted(names) if i != 0}


def _read_manifest(path: Path, names: dict[int, str] | None) -> dict[str, frozenset[int]]:
    """``partial_labels.json`` as case -> labeled organ ids; names need ``names`` to resolve."""
    manifest = parse_manifest(read_json(path), path, {name: i for i, name in (names or {}).items()})
    for case, organs in manifest.items():
        if names is not None and (unknown := sorted(organs - set(names))):
            raise IpnpError(f"{path}: case {case}: unknown organ {unknown[0]!r}")
    return manifest
