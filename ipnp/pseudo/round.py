"""One pseudo-labeling round (paper §2.3-2.4) and its on-disk store.

For every training case with unknown organs: the specialist predicts labels and probabilities; each
unknown organ's predicted mask becomes two box prompts; the generalist answers with a candidate; the
candidate is refined (τ, ROI, and — once the entropy gate is active — accepted only if its mean entropy
fell). True labels are never changed: pseudo-labels fill only voxels that are 0 in the ground truth, only
for organs unlabeled in that case, and where two pseudo-labels overlap the higher specialist probability
wins. A pseudo-label once accepted is carried into later rounds until a better one replaces it.

Store, per round ``k`` (written under a temporary name and renamed when complete)::

    rounds/<k>/labels/<case>.nii.gz        ground truth merged with the pseudo-labels
    rounds/<k>/labels/pseudo_labels.json   {case: [organ ids carrying a pseudo-label]} (for ipnp train --labels)
    rounds/<k>/pseudo_status.json          per case and organ: status, reason, voxels, entropy, Dice, timing
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ipnp.data.dataset import Case, PartialDataset, read_label
from ipnp.data.io import Geometry, read_json, staged_dir, write_image, write_json
from ipnp.errors import IpnpError
from ipnp.generalist.base import Generalist
from ipnp.pseudo.prompts import anatomical_axes, box_prompts
from ipnp.pseudo.refine import RefineSettings, entropy_map, mean_entropy, refine

log = logging.getLogger(__name__)

ACCEPTED, REJECTED, SKIPPED = "accepted", "rejected", "skipped"
STATUS_FILE = "pseudo_status.json"
PSEUDO_MANIFEST = "pseudo_labels.json"


@dataclass
class OrganOutcome:
    """What happened to one unknown organ of one case in one round."""

    status: str
    reason: str
    voxels: int = 0
    mean_entropy: float | None = None
    dice: float | None = None  # against labelsTr_full, when a simulation has it
    pseudo_label: bool = False  # whether the merged labels carry a pseudo-label for this organ after the round
    reference_entropy: float | None = None  # mean entropy of the pseudo-label carried, for the next gate


@dataclass
class CaseResult:
    organs: dict[int, OrganOutcome] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: {"predict": 0.0, "generalist": 0.0, "refine": 0.0, "io": 0.0})


def round_dir(out: str | os.PathLike, k: int) -> Path:
    return Path(out) / "rounds" / str(k)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _as_mask(candidate: object, shape: tuple[int, ...]) -> np.ndarray:
    """The generalist's answer as a bool mask, or ValueError if it is not one."""
    array = np.asarray(candidate)
    if array.shape != shape:
        raise ValueError(f"generalist returned shape {array.shape}, expected {shape}")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError("generalist returned values other than 0 and 1")
        array = array.astype(bool)
    return array


def pseudo_label_case(
    case: Case,
    image: np.ndarray,
    geometry: Geometry,
    ground_truth: np.ndarray,
    predicted: np.ndarray,
    probs: np.ndarray,
    generalist: Generalist,
    settings: RefineSettings,
    *,
    gate_active: bool,
    previous: dict[int, tuple[np.ndarray, float]],
    full_label: np.ndarray | None = None,
    result: CaseResult | None = None,
) -> tuple[np.ndarray, CaseResult]:
    """Pseudo-label one case's unknown organs; return the merged label map and what happened per organ.

    ``previous`` maps an organ to its last accepted pseudo-label mask and that mask's mean entropy.
    """
    result = result or CaseResult()
    axes = anatomical_axes(geometry.direction)
    start = time.perf_counter()
    entropy = entropy_map(probs)
    result.seconds["refine"] += time.perf_counter() - start
    start = time.perf_counter()
    generalist.set_image(image[0], geometry.spacing_zyx)
    result.seconds["generalist"] += time.perf_counter() - start

    pseudo: dict[int, np.ndarray] = {}
    for organ in sorted(case.unknown):
        outcome, mask = _one_organ(organ, ground_truth, predicted, probs, entropy, generalist, settings, axes,
                                   gate_active, previous.get(organ), result)
        if mask is not None:
            pseudo[organ] = mask
            if full_label is not None:
                outcome.dice = _dice(mask, full_label == organ)
        result.organs[organ] = outcome

    start = time.perf_counter()
    merged = ground_truth.copy()
    best = np.full(ground_truth.shape, -1.0, dtype=np.float32)
    free = ground_truth == 0
    for organ, mask in pseudo.items():
        p = probs[organ].astype(np.float32)
        take = mask & free & (p > best)
        merged[take] = organ
        best[take] = p[take]
    for organ in pseudo:  # an overlap can take a whole pseudo-label away
        result.organs[organ].voxels = int((merged == organ).sum())
    result.seconds["refine"] += time.perf_counter() - start
    return merged, result


def _one_organ(
    organ: int,
    ground_truth: np.ndarray,
    predicted: np.ndarray,
    probs: np.ndarray,
    entropy: np.ndarray,
    generalist: Generalist,
    settings: RefineSettings,
    axes,
    gate_active: bool,
    previous: tuple[np.ndarray, float] | None,
    result: CaseResult,
) -> tuple[OrganOutcome, np.ndarray | None]:
    """One organ's outcome and the pseudo-label mask it leaves (new, carried over, or None)."""

    def keep_previous(status: str, reason: str, h: float | None = None) -> tuple[OrganOutcome, np.ndarray | None]:
        if previous is None:
            return OrganOutcome(status, reason, mean_entropy=h), None
        mask, reference = previous
        reason += "; previous pseudo-label kept"
        return OrganOutcome(status, reason, int(mask.sum()), h, pseudo_label=True, reference_entropy=reference), mask

    prompts = box_prompts(predicted == organ, settings.padding, axes)
    if prompts is None:
        return keep_previous(SKIPPED, "the specialist predicts no voxel of this organ")
    start = time.perf_counter()
    try:
        candidate = _as_mask(generalist.segment(prompts), ground_truth.shape)
    except Exception as exc:  # noqa: BLE001 - one organ's failure must not end the round
        return keep_previous(REJECTED, f"generalist failed: {type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        result.seconds["generalist"] += time.perf_counter() - start

    start = time.perf_counter()
    refined = refine(candidate, probs[organ], prompts, settings) & (ground_truth == 0)
    h = mean_entropy(refined, entropy)
    result.seconds["refine"] += time.perf_counter() - start
    if not refined.any():
        return keep_previous(REJECTED, "empty after refinement (tau, ROI)")
    if gate_active and previous is not None and not h < previous[1]:
        return keep_previous(REJECTED, f"mean entropy {h:.4f} did not fall below {previous[1]:.4f}", h)
    return OrganOutcome(ACCEPTED, "", int(refined.sum()), h, pseudo_label=True, reference_entropy=h), refined


def load_previous(out: str | os.PathLike, k: int, case_id: str, file_ending: str) -> dict[int, tuple[np.ndarray, float]]:
    """The pseudo-labels a case carried after round ``k`` (empty when there is no such round)."""
    folder = round_dir(out, k)
    if k < 1 or not (folder / STATUS_FILE).is_file():
        return {}
    organs = read_json(folder / STATUS_FILE)["cases"].get(case_id, {}).get("organs", {})
    carried = {int(o): v["reference_entropy"] for o, v in organs.items() if v["pseudo_label"]}
    if not carried:
        return {}
    labels, _ = read_label(folder / "labels" / f"{case_id}{file_ending}")
    return {organ: (labels == organ, entropy) for organ, entropy in carried.items()}


def run_round(
    dataset: PartialDataset,
    specialist,
    generalist: Generalist,
    out: str | os.PathLike,
    k: int,
    settings: RefineSettings = RefineSettings(),
    *,
    gate_active: bool = False,
    cases: list[str] | None = None,
) -> Path:
    """Run pseudo-labeling round ``k`` over the training cases and store it under ``out/rounds/<k>``."""
    if not specialist.is_softmax:
        raise IpnpError(f"{specialist.run_dir}: pseudo-labeling needs a softmax specialist (marginal, ipnp, full-sup)")
    if k > 1 and not (round_dir(out, k - 1) / STATUS_FILE).is_file():
        raise IpnpError(f"{round_dir(out, k - 1)}: round {k - 1} is missing; run it first")
    target = round_dir(out, k)
    case_ids = cases or dataset.training_ids
    if unknown := sorted(set(case_ids) - set(dataset.training_ids)):
        raise IpnpError(f"{dataset.root}: no training case {unknown[0]!r}")
    status: dict = {"round": k, "entropy_gate": gate_active, "settings": asdict(settings), "cases": {}}
    manifest: dict[str, list[int]] = {}
    with staged_dir(target, inputs=(dataset.root,)) as tmp:
        (tmp / "labels").mkdir()
        for case_id in tqdm(case_ids, desc=f"pseudo-label round {k}", unit="case"):
            case = dataset.case(case_id)
            result = CaseResult()
            start = time.perf_counter()
            image, geometry = case.load_image()
            ground_truth, _ = case.load_label()
            full = case.load_full_label()[0] if case.full_label_path is not None else None
            previous = load_previous(out, k - 1, case_id, dataset.file_ending)
            result.seconds["io"] += time.perf_counter() - start
            if case.unknown:
                start = time.perf_counter()
                predicted, probs = specialist.predict(image, geometry)
                result.seconds["predict"] += time.perf_counter() - start
                merged, result = pseudo_label_case(case, image, geometry, ground_truth, predicted, probs, generalist, settings,
                                                   gate_active=gate_active, previous=previous, full_label=full, result=result)
            else:
                merged = ground_truth
            start = time.perf_counter()
            write_image(merged, geometry, tmp / "labels" / f"{case_id}{dataset.file_ending}")
            result.seconds["io"] += time.perf_counter() - start
            manifest[case_id] = sorted(o for o, v in result.organs.items() if v.pseudo_label)
            status["cases"][case_id] = {
                "organs": {str(o): asdict(v) for o, v in sorted(result.organs.items())},
                "seconds": {key: round(value, 4) for key, value in result.seconds.items()},
            }
        status["counts"] = _counts(status["cases"])
        write_json(manifest, tmp / "labels" / PSEUDO_MANIFEST)
        write_json(status, tmp / STATUS_FILE)
    counts = status["counts"]
    log.info("round %d: %d accepted, %d rejected, %d skipped", k, counts[ACCEPTED], counts[REJECTED], counts[SKIPPED])
    return target


def _counts(cases: dict) -> dict[str, int]:
    counts = {ACCEPTED: 0, REJECTED: 0, SKIPPED: 0}
    for entry in cases.values():
        for organ in entry["organs"].values():
            counts[organ["status"]] += 1
    return counts
