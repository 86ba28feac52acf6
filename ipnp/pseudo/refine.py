"""Pseudo-label refinement (paper §2.4): confidence, ROI and entropy constraints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ipnp.errors import IpnpError
from ipnp.pseudo.prompts import PromptPair


@dataclass(frozen=True)
class RefineSettings:
    """The paper's defaults: box padding p=6, class-probability threshold τ=0.4, ROI dilation δ=3."""

    padding: int = 6
    tau: float = 0.4
    delta: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise IpnpError(f"tau {self.tau}: must lie in [0, 1]")
        for name in ("padding", "delta"):
            if getattr(self, name) < 0:
                raise IpnpError(f"{name} {getattr(self, name)}: must not be negative")


def entropy_map(probs: np.ndarray) -> np.ndarray:
    """Voxel-wise entropy H(v) = -Σ_c p_c log p_c (nats) of (classes, z, y, x) probabilities, as float32.

    Accumulates class by class so that a CT-sized volume never needs a float32 copy of all probabilities.
    """
    entropy = np.zeros(probs.shape[1:], dtype=np.float32)
    for channel in probs:
        p = channel.astype(np.float32)
        entropy -= p * np.log(np.maximum(p, np.float32(1e-12)))
    return entropy


def refine(
    candidate: np.ndarray, organ_probability: np.ndarray, prompts: PromptPair, settings: RefineSettings
) -> np.ndarray:
    """Keep the candidate's voxels where p_organ ≥ τ and inside the prompts' ROI dilated by δ (Eq. 2)."""
    roi = prompts.roi(candidate.shape, settings.delta)
    refined = np.zeros(candidate.shape, dtype=bool)
    refined[roi] = candidate[roi] & (organ_probability[roi] >= settings.tau)
    return refined


def mean_entropy(mask: np.ndarray, entropy: np.ndarray) -> float:
    """H̄ of Eq. 3: the mean voxel entropy over a pseudo-label (NaN for an empty mask)."""
    return float(entropy[mask].mean()) if mask.any() else float("nan")
