"""One pseudo-labeling round (paper §2.3-2.4) and its on-disk store.

For every training case with unknown organs: the specialist predicts labels and probabilities; each
unknown organ's predicted mask becomes two box prompts; the generalist answers with a candidate; the
candidate is refined (τ, ROI, optionally the position check of :mod:`ipnp.pseudo.placement`, and — once
the entropy gate is active — accepted only if its mean entropy fell). True labels are never changed:
pseudo-labels fill only voxels that are 0 in the ground truth, only for organs unlabeled in that case, and
where two pseudo-labels overlap the higher specialist probability wins. A pseudo-label once accepted is
carried into later rounds until a better one replaces it. Unless ``trust_cases`` is 0, a trust test on
labelled cases first decides on which organs the generalist may pseudo-label (:mod:`ipnp.pseudo.trust`).
Probabilities are read only over each organ's ROI, and pseudo-labels are kept as masks over regions, so a
round's memory is dominated by the specialist's prediction, not by the number of organs.

Store, per round ``k``::

    rounds/<k>/labels/<case>.nii.gz        ground truth merged with the pseudo-labels
    rounds/<k>/labels/pseudo_labels.json   {case: [organ ids carrying a pseudo-label]} (for ipnp train --labels)
    rounds/<k>/pseudo_status.json          per case and organ: status, reason, voxels, entropy, Dice, timing;
                                           per case the voxel's and the true labels' volumes (mL); the
                                           trust test per organ, if made

``rounds/<k>`` appears only when the round is complete. Until then the round lives in
``rounds/.<k>.ipnp-incomplete/``: ``round.json`` (what the round is: settings, specialist, generalist),
``store/`` (the future ``rounds/<k>``), ``candidates/<case>.npz`` (a trust-test case's samples and candidates,
:func:`save_candidates`) and ``done/<case>.json`` (a finished case's status, written after its label file).
Every file is written atomically, so a round killed at any moment and run again with the same settings
predicts again only the cases with neither a ``candidates`` nor a ``done`` record; with other settings it
starts over. Each case is predicted once: the trust test's cases first, whose candidates wait for the test's
decision, then the others.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from ipnp.data.dataset import Case, PartialDataset, read_label
from ipnp.data.io import Geometry, atomic_path, read_json, refuse_output_inside, write_image, write_json
from ipnp.errors import IpnpError
from ipnp.generalist.base import Generalist
from ipnp.pseudo.candidate import (ACCEPTED, REJECTED, SKIPPED, NoCandidate, dice, failure, label_scores,
                                   refined_candidate)
from ipnp.pseudo.placement import PlacementPrior, placement
from ipnp.pseudo.prompts import anatomical_axes
from ipnp.pseudo.refine import PseudoLabel, RefineSettings
from ipnp.pseudo.trust import Sample, case_samples, organ_trust, trust_plan

log = logging.getLogger(__name__)

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
    # The share of the pseudo-label's voxels that lie on the organ in labelsTr_full. A pseudo-label trains only
    # where it is (positive evidence), so its wrong voxels, not the ones it misses, are what the specialist learns.
    precision: float | None = None
    # The specialist's own mask of the organ (its argmax, on voxels free in the ground truth) against
    # labelsTr_full: what the pseudo-label would be without the generalist, so the two Dice show its gain.
    specialist_dice: float | None = None
    pseudo_label: bool = False  # whether the merged labels carry a pseudo-label for this organ after the round
    reference_entropy: float | None = None  # mean entropy of the pseudo-label carried, for the next gate
    offset_mm: float | None = None  # centre's distance from where the labelled cases place the organ, if checked
    tolerance_mm: float | None = None  # the distance the position check allows for this organ


@dataclass
class CaseResult:
    organs: dict[int, OrganOutcome] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: {"predict": 0.0, "generalist": 0.0, "refine": 0.0, "io": 0.0})


def round_dir(out: str | os.PathLike, k: int) -> Path:
    return Path(out) / "rounds" / str(k)


def accepted_dice(status: dict) -> tuple[float, float] | None:
    """Mean Dice of the pseudo-labels a round accepted, and of the specialist's own masks of the same organs.

    Their difference is what the generalist and the refinement added over the specialist's argmax. None
    without such organs, e.g. in rounds stored before ``specialist_dice`` existed.
    """
    pairs = [
        (o["dice"], o["specialist_dice"])
        for c in status["cases"].values() for o in c["organs"].values()
        if o["status"] == ACCEPTED and o["dice"] is not None and o.get("specialist_dice") is not None
    ]
    return tuple(float(np.mean(d)) for d in zip(*pairs)) if pairs else None


@dataclass
class RoundCase:
    """One training case as a round sees it: its labels, what earlier rounds left it and, once predicted, its
    image and the specialist's prediction (``probs`` is indexed like a (classes, z, y, x) array; only ROIs
    are read)."""

    case_id: str
    unknown: Collection[int]  # the organs its labels lack
    geometry: Geometry
    ground_truth: np.ndarray
    previous: dict[int, PseudoLabel] = field(default_factory=dict)  # organ -> last accepted pseudo-label
    full_label: np.ndarray | None = None  # labelsTr_full, in simulations only
    image: np.ndarray | None = None  # (channels, z, y, x)
    predicted: np.ndarray | None = None
    probs: Any = None


@dataclass
class OrganCandidate:
    """What a case's prediction gives one unknown organ, before the round decides on it."""

    label: PseudoLabel | NoCandidate | None  # None: not prompted (the organ was refused before)
    specialist_dice: float | None = None  # see OrganOutcome
    carried_probability: np.ndarray | None = None  # this round's p_organ on the previous pseudo-label's voxels


@dataclass
class CaseCandidates:
    """What one specialist prediction of a case gives the round: a candidate per unknown organ, the trust
    samples of the case's tested organs, and why the generalist could not take the image, if it could not.

    A case of the trust test is predicted once: its candidates wait (on disk, :func:`save_candidates`) until
    the test has decided which organs the generalist may pseudo-label.
    """

    organs: dict[int, OrganCandidate] = field(default_factory=dict)
    samples: dict[int, Sample] = field(default_factory=dict)
    image_error: str | None = None
    trust_seconds: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)  # what predicting the case and its candidates took


def case_candidates(
    case: RoundCase,
    generalist: Generalist,
    settings: RefineSettings,
    *,
    refused: Collection[int] = (),
    tested: Collection[int] = (),
    seconds: dict[str, float],
) -> CaseCandidates:
    """Prompt the generalist for each unknown organ of a predicted ``case`` not ``refused`` and refine its
    answers; score the ``tested`` organs for the trust test. Time spent is added to ``seconds``."""
    predicted, probs = case.predicted, case.probs
    axes = anatomical_axes(case.geometry.direction)
    found = CaseCandidates()
    start = time.perf_counter()
    try:
        generalist.set_image(case.image[0], case.geometry.spacing_zyx)
    except Exception as exc:  # noqa: BLE001 - one case's failure must not end the round
        found.image_error = failure("generalist failed on the image", exc)
    seconds["generalist"] += time.perf_counter() - start
    if tested and not found.image_error:
        start = time.perf_counter()
        found.samples = case_samples(case.ground_truth, predicted, probs, tested, generalist, settings, axes)
        found.trust_seconds = time.perf_counter() - start
    free = case.ground_truth == 0
    for organ in sorted(case.unknown):
        prompt = not (found.image_error or organ in refused)
        candidate = OrganCandidate(
            refined_candidate(organ, predicted, probs, generalist, settings, axes, free, seconds) if prompt else None)
        if case.full_label is not None:
            candidate.specialist_dice = dice((predicted == organ) & free, case.full_label == organ)
        if (carried := case.previous.get(organ)) is not None:
            candidate.carried_probability = probs[(organ, *carried.region)][carried.mask]
        found.organs[organ] = candidate
    return found


def decide_case(
    case: RoundCase,
    candidates: CaseCandidates,
    settings: RefineSettings,
    *,
    gate_active: bool,
    result: CaseResult,
    prior: PlacementPrior | None = None,
    untrusted: dict[int, str] | None = None,
) -> np.ndarray:
    """Accept or reject each unknown organ's candidate, record the outcomes in ``result``, and return the
    ground truth merged with the pseudo-labels (where two overlap, the higher probability wins)."""
    untrusted = untrusted or {}

    def offset(organ: int, label: PseudoLabel) -> tuple[float, float] | None:
        return prior.offset(case.case_id, organ, placement(label.mask, case.geometry, label.region)) if prior else None

    start = time.perf_counter()
    pseudo: dict[int, PseudoLabel] = {}
    for organ, candidate in sorted(candidates.organs.items()):
        carried = case.previous.get(organ)
        if carried is not None:
            carried = replace(carried, probability=candidate.carried_probability)
        outcome, label = _one_organ(organ, candidate.label, settings, gate_active, carried,
                                    candidates.image_error or untrusted.get(organ), offset)
        outcome.specialist_dice = candidate.specialist_dice
        if case.full_label is not None and label is not None:
            outcome.dice, outcome.precision = label_scores(label, case.full_label == organ)
        if label is not None:
            pseudo[organ] = label
        result.organs[organ] = outcome

    free = case.ground_truth == 0
    merged = case.ground_truth.copy()
    best = np.full(merged.shape, -1.0, dtype=np.float16)  # probabilities are float16 already
    for organ, label in pseudo.items():
        p = np.full(label.mask.shape, -1.0, dtype=np.float16)
        p[label.mask] = label.probability
        take = label.mask & free[label.region] & (p > best[label.region])
        merged[label.region][take] = organ
        best[label.region][take] = p[take]
    for organ, label in pseudo.items():  # an overlap can take a whole pseudo-label away
        result.organs[organ].voxels = int((merged[label.region] == organ).sum())
    result.seconds["refine"] += time.perf_counter() - start
    return merged


def pseudo_label_case(
    case: RoundCase,
    generalist: Generalist,
    settings: RefineSettings,
    *,
    gate_active: bool,
    result: CaseResult | None = None,
    prior: PlacementPrior | None = None,
    untrusted: dict[int, str] | None = None,
) -> tuple[np.ndarray, CaseResult]:
    """Pseudo-label a predicted case's unknown organs; return the merged label map and what happened per organ.

    ``prior``, if given, refuses pseudo-labels placed too far from where the case's true labels expect the
    organ; ``untrusted`` maps organs not to pseudo-label this round to the reason (:mod:`ipnp.pseudo.trust`);
    the generalist is not asked about them.
    """
    result = result or CaseResult()
    candidates = case_candidates(case, generalist, settings, refused=set(untrusted or ()), seconds=result.seconds)
    merged = decide_case(case, candidates, settings, gate_active=gate_active, result=result, prior=prior,
                         untrusted=untrusted)
    return merged, result


def _one_organ(
    organ: int,
    label: PseudoLabel | NoCandidate | None,
    settings: RefineSettings,
    gate_active: bool,
    previous: PseudoLabel | None,
    refusal: str | None = None,
    offset: Callable[[int, PseudoLabel], tuple[float, float] | None] | None = None,
) -> tuple[OrganOutcome, PseudoLabel | None]:
    """One organ's outcome and the pseudo-label it leaves (new, carried over, or None). A ``refusal`` (the
    generalist could not take the case's image, or is not trusted on this organ) rejects it;
    ``offset(organ, label)`` gives a label's (distance, tolerance) from its expected place, or None where
    that is not checked. ``previous`` carries this round's probabilities, which the overlap rule weighs."""
    where: tuple[float, float] | tuple[None, None] = (None, None)  # set once checked; keep_previous reports it

    def keep_previous(status: str, reason: str, h: float | None = None) -> tuple[OrganOutcome, PseudoLabel | None]:
        if previous is None:
            return OrganOutcome(status, reason, mean_entropy=h, offset_mm=where[0], tolerance_mm=where[1]), None
        reason += "; previous pseudo-label kept"
        return OrganOutcome(status, reason, previous.voxels, h, pseudo_label=True, reference_entropy=previous.entropy,
                            offset_mm=where[0], tolerance_mm=where[1]), previous

    if refusal:
        return keep_previous(REJECTED, refusal)
    if isinstance(label, NoCandidate):
        return keep_previous(label.status, label.reason)
    h = label.entropy
    if not label.voxels:
        return keep_previous(REJECTED, "empty after refinement (tau, ROI)")
    if offset is not None and (checked := offset(organ, label)) is not None:
        where = checked
        if where[0] > where[1]:
            return keep_previous(REJECTED, f"centre {where[0]:.0f} mm from where this case's labelled organs place it "
                                           f"(tolerance {where[1]:.0f} mm)", h)
    if settings.max_entropy is not None and h > settings.max_entropy:
        return keep_previous(REJECTED, f"mean entropy {h:.4f} above the ceiling {settings.max_entropy:g}", h)
    if gate_active and previous is not None and not h < previous.entropy:
        return keep_previous(REJECTED, f"mean entropy {h:.4f} did not fall below {previous.entropy:.4f}", h)
    return OrganOutcome(ACCEPTED, "", label.voxels, h, pseudo_label=True, reference_entropy=h,
                        offset_mm=where[0], tolerance_mm=where[1]), label


def load_previous(out: str | os.PathLike, k: int, case_id: str, file_ending: str) -> dict[int, PseudoLabel]:
    """The pseudo-labels a case carried after round ``k`` (empty when there is no such round)."""
    folder = round_dir(out, k)
    if k < 1 or not (folder / STATUS_FILE).is_file():
        return {}
    organs = read_json(folder / STATUS_FILE)["cases"].get(case_id, {}).get("organs", {})
    carried = {int(o): v["reference_entropy"] for o, v in organs.items() if v["pseudo_label"]}
    if not carried:
        return {}
    labels, _ = read_label(folder / "labels" / f"{case_id}{file_ending}")
    boxes = ndimage.find_objects(labels)
    previous = {}
    for organ, entropy in carried.items():
        # An overlap may have taken the whole pseudo-label away: then it is carried with no voxel.
        region = (boxes[organ - 1] if organ <= len(boxes) else None) or (slice(0, 0),) * 3
        previous[organ] = PseudoLabel(region, labels[region] == organ, entropy)
    return previous


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
    """Run pseudo-labeling round ``k`` over the training cases and store it under ``out/rounds/<k>``.

    A round interrupted earlier with the same settings resumes: finished cases are not redone. A round
    already complete with the same settings and cases is returned as it is.
    """
    if not specialist.is_softmax:
        raise IpnpError(f"{specialist.run_dir}: pseudo-labeling needs a softmax specialist (marginal, ipnp, full-sup)")
    if k > 1 and not (round_dir(out, k - 1) / STATUS_FILE).is_file():
        raise IpnpError(f"{round_dir(out, k - 1)}: round {k - 1} is missing; run it first")
    target = round_dir(out, k)
    root = Path(dataset.root).absolute()
    refuse_output_inside(target, root)
    case_ids = list(cases or dataset.training_ids)
    if unknown := sorted(set(case_ids) - set(dataset.training_ids)):
        raise IpnpError(f"{dataset.root}: no training case {unknown[0]!r}")
    identity = {"round": k, "entropy_gate": gate_active, "settings": asdict(settings), "dataset": str(root),
                "specialist": str(Path(specialist.run_dir).absolute()), "generalist": generalist.name}
    work = target.with_name(f".{k}.ipnp-incomplete")
    if target.exists():
        return _completed(target, work, identity, case_ids)
    _open_work(work, identity)
    prior = PlacementPrior.from_dataset(dataset) if settings.position_check else None
    store, done = work / "store", work / "done"
    resumed = 0
    plan = trust_plan(dataset, case_ids, settings.trust_cases) if settings.trust_cases else {}
    order = list(plan) + [c for c in case_ids if c not in plan]
    run_case = partial(_round_case, file_ending=dataset.file_ending, specialist=specialist, generalist=generalist,
                       settings=settings, gate_active=gate_active, out=out, k=k, labels_dir=store / "labels", prior=prior)
    # One BLAS thread: the classical generalist's random walker makes thousands of small vector products,
    # which a second BLAS thread slows down 10-30x on a busy machine (measured on 2 shared cores).
    with threadpool_limits(limits=1, user_api="blas"):
        # The trust test's cases are predicted first, once: their samples decide the trust, and their own
        # candidates wait on disk for that decision.
        samples, trust_seconds = [], 0.0
        for case_id, tested in tqdm(plan.items(), desc=f"trust test round {k}", unit="case"):
            path = work / "candidates" / f"{case_id}.npz"
            if not path.is_file():
                save_candidates(_predict_candidates(dataset.case(case_id), dataset.file_ending, specialist, generalist,
                                                    settings, out, k, tested), path)
            found, seconds = load_trust_samples(path)
            samples.append(found)
            trust_seconds += seconds
        trust = organ_trust(samples, dataset.organ_ids, settings.trust_precision) if plan else {}
        untrusted = {o: t.refusal() for o, t in trust.items() if not t.trusted}
        if untrusted:
            log.info("round %d: generalist not trusted on organs %s", k, sorted(untrusted))
        for case_id in tqdm(order, desc=f"pseudo-label round {k}", unit="case"):
            if (done / f"{case_id}.json").is_file():
                resumed += 1
                continue
            waiting = load_candidates(work / "candidates" / f"{case_id}.npz") if case_id in plan else None
            write_json(run_case(dataset.case(case_id), untrusted=untrusted, candidates=waiting), done / f"{case_id}.json")
    if resumed:
        log.info("round %d resumed: %d of %d cases were already finished", k, resumed, len(case_ids))
    status = {**identity, "cases": {c: read_json(done / f"{c}.json") for c in case_ids}}
    if trust:
        status["trust"] = {"seconds": round(trust_seconds, 4),
                           "organs": {str(o): {**asdict(t), "trusted": t.trusted} for o, t in sorted(trust.items())}}
    status["counts"] = _counts(status["cases"])
    manifest = {c: sorted(int(o) for o, v in entry["organs"].items() if v["pseudo_label"]) for c, entry in status["cases"].items()}
    write_json(manifest, store / "labels" / PSEUDO_MANIFEST)
    write_json(status, store / STATUS_FILE)
    _remove_all_but(store / "labels", {f"{c}{dataset.file_ending}" for c in case_ids} | {PSEUDO_MANIFEST})
    os.replace(store, target)
    shutil.rmtree(work)
    counts = status["counts"]
    log.info("round %d: %d accepted, %d rejected, %d skipped", k, counts[ACCEPTED], counts[REJECTED], counts[SKIPPED])
    return target


def _load_case(case: Case, file_ending: str, out: str | os.PathLike, k: int, seconds: dict[str, float],
               specialist=None) -> RoundCase:
    """The case as round ``k`` sees it (full labels only in simulations); with a ``specialist``, also its
    image and the specialist's prediction."""
    start = time.perf_counter()
    image, geometry = case.load_image() if specialist is not None else (None, case.geometry)
    ground_truth, _ = case.load_label()
    full = case.load_full_label()[0] if case.full_label_path is not None else None
    previous = load_previous(out, k - 1, case.case_id, file_ending)
    round_case = RoundCase(case.case_id, case.unknown, geometry, ground_truth, previous, full, image)
    seconds["io"] += time.perf_counter() - start
    if specialist is not None:
        start = time.perf_counter()
        round_case.predicted, round_case.probs = specialist.predict(image, geometry)
        seconds["predict"] += time.perf_counter() - start
    return round_case


def _predict_candidates(case: Case, file_ending: str, specialist, generalist: Generalist, settings: RefineSettings,
                        out: str | os.PathLike, k: int, tested: list[int]) -> CaseCandidates:
    """Predict a case of the trust test: its samples, and candidates for all its unknown organs (trusted or not:
    the test is not decided yet)."""
    seconds = dict.fromkeys(CaseResult().seconds, 0.0)
    round_case = _load_case(case, file_ending, out, k, seconds, specialist)
    found = case_candidates(round_case, generalist, settings, tested=tested, seconds=seconds)
    found.seconds = seconds
    return found


def _round_case(case: Case, file_ending: str, specialist, generalist: Generalist, settings: RefineSettings,
                gate_active: bool, out: str | os.PathLike, k: int, labels_dir: Path,
                prior: PlacementPrior | None = None, untrusted: dict[int, str] | None = None,
                candidates: CaseCandidates | None = None) -> dict:
    """Pseudo-label one case, write its merged labels into ``labels_dir``, and return its status entry.
    ``candidates`` are those a trust-test case already has; other cases are predicted here."""
    result = CaseResult()
    predicting = candidates is None and bool(case.unknown)
    round_case = _load_case(case, file_ending, out, k, result.seconds, specialist if predicting else None)
    if candidates is not None:
        for key, value in candidates.seconds.items():
            result.seconds[key] += value
        merged = decide_case(round_case, candidates, settings, gate_active=gate_active, result=result, prior=prior,
                             untrusted=untrusted)
    elif predicting:
        merged, result = pseudo_label_case(round_case, generalist, settings, gate_active=gate_active, result=result,
                                           prior=prior, untrusted=untrusted)
    else:
        merged = round_case.ground_truth
    start = time.perf_counter()
    write_image(merged, round_case.geometry, labels_dir / f"{case.case_id}{file_ending}")
    result.seconds["io"] += time.perf_counter() - start
    return {
        "organs": {str(o): asdict(v) for o, v in sorted(result.organs.items())},
        "seconds": {key: round(value, 4) for key, value in result.seconds.items()},
        "voxel_ml": voxel_ml(round_case.geometry),
        "labelled_ml": labelled_volumes(round_case.ground_truth, round_case.geometry),
    }


def voxel_ml(geometry: Geometry) -> float:
    """The volume of one voxel in millilitres."""
    return float(np.prod(geometry.spacing)) / 1000.0


def labelled_volumes(ground_truth: np.ndarray, geometry: Geometry) -> dict[str, float]:
    """The volume (mL) of each organ a case's true labels hold, keyed like the status's organs.

    Real partial datasets have no complete labels to score pseudo-labels against; the sizes the true labels
    give an organ are what a pseudo-label's size can be held to (the report's size table).
    """
    counts = np.bincount(ground_truth.ravel())
    unit = voxel_ml(geometry)
    return {str(organ): round(float(n) * unit, 4) for organ, n in enumerate(counts) if organ and n}


def save_candidates(candidates: CaseCandidates, path: Path) -> None:
    """Store a case's candidates atomically as one .npz: masks and probabilities as arrays, the rest as JSON."""
    arrays, organs = {}, {}
    for organ, c in candidates.organs.items():
        entry = {"specialist_dice": c.specialist_dice, "carried": c.carried_probability is not None}
        if c.carried_probability is not None:
            arrays[f"carried_{organ}"] = c.carried_probability
        if isinstance(c.label, NoCandidate):
            entry["none"] = asdict(c.label)
        elif c.label is not None:
            entry["region"] = [[r.start, r.stop] for r in c.label.region]
            entry["entropy"] = c.label.entropy
            arrays[f"mask_{organ}"], arrays[f"probability_{organ}"] = c.label.mask, c.label.probability
        organs[str(organ)] = entry
    meta = {"organs": organs, "samples": {str(o): pair for o, pair in candidates.samples.items()},
            "image_error": candidates.image_error, "trust_seconds": candidates.trust_seconds,
            "seconds": candidates.seconds}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)


def _samples(meta: dict) -> dict[int, Sample]:
    return {int(o): tuple(pair) for o, pair in meta["samples"].items()}


def load_trust_samples(path: Path) -> tuple[dict[int, Sample], float]:
    """The trust samples stored by :func:`save_candidates` and the seconds they took; no mask is read (an .npz
    decompresses only the members asked for)."""
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
    return _samples(meta), meta["trust_seconds"]


def load_candidates(path: Path) -> CaseCandidates:
    """What :func:`save_candidates` stored."""
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        found = CaseCandidates(samples=_samples(meta), image_error=meta["image_error"],
                               trust_seconds=meta["trust_seconds"], seconds=meta["seconds"])
        for organ, entry in meta["organs"].items():
            if "none" in entry:
                label = NoCandidate(**entry["none"])
            elif "region" in entry:
                label = PseudoLabel(tuple(slice(*r) for r in entry["region"]), stored[f"mask_{organ}"], entry["entropy"],
                                    stored[f"probability_{organ}"])
            else:
                label = None
            carried = stored[f"carried_{organ}"] if entry["carried"] else None
            found.organs[int(organ)] = OrganCandidate(label, entry["specialist_dice"], carried)
    return found


def _open_work(work: Path, identity: dict) -> None:
    """Keep an unfinished round made with the same settings; otherwise start an empty one."""
    if work.exists():
        if (work / "round.json").is_file() and read_json(work / "round.json") == identity:
            return
        log.info("%s: discarding an unfinished round made with other settings", work)
        shutil.rmtree(work)
    try:
        (work / "done").mkdir(parents=True)
        (work / "store" / "labels").mkdir(parents=True)
    except OSError as exc:
        raise IpnpError(f"{work}: cannot create output folder ({exc.strerror or exc})") from exc
    write_json(identity, work / "round.json")  # last: its presence means the folders exist


def _completed(target: Path, work: Path, identity: dict, case_ids: list[str]) -> Path:
    """An existing round: returned if it was made with the same settings and cases, an error otherwise."""
    status = read_json(target / STATUS_FILE) if (target / STATUS_FILE).is_file() else {}
    if any(status.get(key) != value for key, value in identity.items()) or list(status.get("cases", {})) != case_ids:
        raise IpnpError(f"{target}: round {identity['round']} already exists, made with other settings or cases; "
                        "remove it to redo the round")
    if work.exists():  # left by a run killed between completing the round and cleaning up
        shutil.rmtree(work)
    log.info("round %d is already complete: %s", identity["round"], target)
    return target


def _remove_all_but(folder: Path, keep: set[str]) -> None:
    """Remove what a killed run or another case selection left in ``folder`` (temporary files, labels)."""
    for path in folder.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _counts(cases: dict) -> dict[str, int]:
    counts = {ACCEPTED: 0, REJECTED: 0, SKIPPED: 0}
    for entry in cases.values():
        for organ in entry["organs"].values():
            counts[organ["status"]] += 1
    return counts
