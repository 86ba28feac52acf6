"""One organ's way from the specialist's mask to a refined pseudo-label: prompts, generalist, refinement.

The pseudo-labeling round runs it on the organs a case lacks; the trust test (:mod:`ipnp.pseudo.trust`) runs
the same steps on organs a case labels, to score them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ipnp.generalist.base import Generalist
from ipnp.pseudo.prompts import AnatomicalAxes, box_prompts, largest_component
from ipnp.pseudo.refine import PseudoLabel, RefineSettings, Region, refine

ACCEPTED, REJECTED, SKIPPED = "accepted", "rejected", "skipped"  # an organ's status in a round


@dataclass(frozen=True)
class NoCandidate:
    """Why an organ got no refined candidate: ``status`` is skipped (nothing to prompt from) or rejected."""

    status: str
    reason: str


def dice(mask: np.ndarray, reference: np.ndarray, region: Region | None = None) -> float:
    """Dice of ``mask``, lying at ``region`` of the volume (None: the whole volume), against ``reference``."""
    total = int(mask.sum()) + int(reference.sum())
    inside = reference if region is None else reference[region]
    return 1.0 if total == 0 else 2.0 * int((mask & inside).sum()) / total


def label_scores(label: PseudoLabel, truth: np.ndarray) -> tuple[float, float | None]:
    """Dice of a pseudo-label against the organ's ``truth`` mask (whole volume), and its precision: the share of
    its voxels on the organ (None for an empty label)."""
    on_organ = int((label.mask & truth[label.region]).sum())
    total = label.voxels + int(truth.sum())
    return (1.0 if total == 0 else 2.0 * on_organ / total), (on_organ / label.voxels if label.voxels else None)


def failure(what: str, exc: Exception) -> str:
    """A one-line reason for a generalist's exception."""
    return f"{what}: {type(exc).__name__}: {exc}".splitlines()[0]


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


def refined_candidate(organ: int, predicted: np.ndarray, probs, generalist: Generalist, settings: RefineSettings,
                      axes: AnatomicalAxes, allowed: np.ndarray, seconds: dict[str, float]) -> PseudoLabel | NoCandidate:
    """Prompt the generalist (whose image is set) from ``predicted == organ`` and refine its answer on ``allowed``
    voxels; add the time spent to ``seconds["generalist"]`` and ``seconds["refine"]``."""
    mask = predicted == organ
    prompts = box_prompts(largest_component(mask) if settings.largest_component else mask, settings.padding, axes)
    if prompts is None:
        return NoCandidate(SKIPPED, "the specialist predicts no voxel of this organ")
    start = time.perf_counter()
    try:
        candidate = _as_mask(generalist.segment(prompts), allowed.shape)
    except Exception as exc:  # noqa: BLE001 - one organ's failure must not end the round
        return NoCandidate(REJECTED, failure("generalist failed", exc))
    finally:
        seconds["generalist"] += time.perf_counter() - start
    start = time.perf_counter()
    label = refine(candidate, probs, organ, prompts, settings, allowed=allowed)
    seconds["refine"] += time.perf_counter() - start
    return label
