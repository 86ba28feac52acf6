"""Pseudo-label refinement (paper §2.4): confidence, ROI and entropy constraints.

Everything works on the prompts' ROI, never on the whole volume: the specialist's probabilities are read
for the ROI only (``probs`` is anything indexed like a (classes, z, y, x) array, e.g.
:class:`ipnp.specialist.predict.CaseProbabilities`), and a pseudo-label is kept as its mask over a region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import entr

from ipnp.errors import IpnpError
from ipnp.pseudo.prompts import PromptPair

Region = tuple[slice, slice, slice]

_SLAB_VOXELS = 2**18  # voxels of a region read at a time: bounds the (classes, slab) temporaries


@dataclass(frozen=True)
class RefineSettings:
    """The paper's defaults: box padding p=6, class-probability threshold τ=0.4, ROI dilation δ=3.

    ``largest_component`` (ipnp's addition, on by default): prompts come from the largest connected
    component of the specialist's mask, as nnU-Net's own postprocessing would keep it. A box is meant to
    frame one object; a false-positive speck far from the organ stretches it over other anatomy, and the
    generalist then segments the wrong thing (docs/pseudo_labels.md).

    ``position_check`` (ipnp's addition, on by default): refuse a pseudo-label whose centre lies farther
    from where the case's true labels place the organ than the labelled cases vary
    (:mod:`ipnp.pseudo.placement`). Without it, a specialist's confident mistake about where an organ is
    becomes a pseudo-label, is learned, and is then protected by the entropy gate (BENCHMARKS.md).

    ``max_entropy`` (ipnp's addition, off by default): refuse a pseudo-label whose mean entropy H̄, in nats,
    exceeds this ceiling in any round. The paper's gate only compares a label with the organ's previous
    one, so the first label of an organ is taken however unsure the specialist is; an organ left without
    one stays unknown, which the marginal loss handles. 0.4 nats is the entropy of a voxel 86 % sure of
    one class and 14 % of another.

    ``trust_cases`` (ipnp's addition, on by default; 0 restores the paper's rule): before each round, test the
    generalist on up to this many labelled training cases per organ, and pseudo-label only the organs on which
    its refined masks score at least the specialist's own Dice (:mod:`ipnp.pseudo.trust`). Without it, an organ
    the generalist segments worse than the specialist gets pseudo-labels that teach the specialist a worse
    version of its own prediction (BENCHMARKS.md, session 8).

    ``trust_precision`` (ipnp's addition, on by default; 0 lets Dice alone decide): the trust test also requires
    the refined masks' mean precision on the labelled cases to reach this share. A pseudo-label is positive
    evidence: the specialist learns its wrong voxels (BENCHMARKS.md, session 9). 0.6 led on OpenKBP in three
    seeds of three and was level on phantoms (sessions 19 and 20).
    """

    padding: int = 6
    tau: float = 0.4
    delta: int = 3
    largest_component: bool = True
    position_check: bool = True
    max_entropy: float | None = None
    trust_cases: int = 5
    trust_precision: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise IpnpError(f"tau {self.tau}: must lie in [0, 1]")
        if not 0.0 <= self.trust_precision <= 1.0:
            raise IpnpError(f"trust_precision {self.trust_precision}: must lie in [0, 1]")
        if self.max_entropy is not None and not self.max_entropy > 0:
            raise IpnpError(f"max_entropy {self.max_entropy}: must be positive (or null for no ceiling)")
        for name in ("padding", "delta", "trust_cases"):
            if getattr(self, name) < 0:
                raise IpnpError(f"{name} {getattr(self, name)}: must not be negative")


@dataclass(frozen=True)
class PseudoLabel:
    """An organ's pseudo-label: a boolean mask over ``region`` of the volume and its mean entropy H̄, plus the
    specialist's p_organ on the mask's voxels (float16, in mask order) when known, for the overlap rule."""

    region: Region
    mask: np.ndarray
    entropy: float
    probability: np.ndarray | None = None

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


def entropy_map(probs: np.ndarray) -> np.ndarray:
    """Voxel-wise entropy H(v) = -Σ_c p_c log p_c (nats) of (classes, ...) probabilities, as float32."""
    return entr(probs.astype(np.float32)).sum(axis=0)


def mean_entropy(mask: np.ndarray, entropy: np.ndarray) -> float:
    """H̄ of Eq. 3: the mean voxel entropy over a pseudo-label (NaN for an empty mask)."""
    return float(entropy[mask].mean()) if mask.any() else float("nan")


def organ_probability_and_entropy(probs, organ: int, region: Region) -> tuple[np.ndarray, np.ndarray]:
    """p_organ and the voxel entropy over all classes on ``region`` of (classes, z, y, x) ``probs``.

    Read a few slices at a time, so that a region as large as the image never needs all its classes at once.
    """
    shape = tuple(s.stop - s.start for s in region)
    probability, entropy = np.empty(shape, dtype=np.float16), np.empty(shape, dtype=np.float32)
    step = max(1, _SLAB_VOXELS // max(1, shape[1] * shape[2]))
    for lo in range(0, shape[0], step):
        part = probs[(slice(None), slice(region[0].start + lo, region[0].start + min(lo + step, shape[0])), *region[1:])]
        probability[lo : lo + step] = part[organ]
        entropy[lo : lo + step] = entropy_map(part)
    return probability, entropy


def refine(candidate: np.ndarray, probs, organ: int, prompts: PromptPair, settings: RefineSettings,
           allowed: np.ndarray | None = None) -> PseudoLabel:
    """Eq. 2 and 3: the candidate's voxels inside the ROI (the boxes' hull dilated by δ) where p_organ ≥ τ
    (and ``allowed``, if given), with their mean entropy. Only the ROI of ``probs`` is read."""
    roi = prompts.roi(candidate.shape, settings.delta)
    probability, entropy = organ_probability_and_entropy(probs, organ, roi)
    kept = candidate[roi] & (probability >= settings.tau)
    if allowed is not None:
        kept &= allowed[roi]
    return PseudoLabel(roi, kept, mean_entropy(kept, entropy), probability[kept])
