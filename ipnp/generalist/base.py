"""The generalist interface, modelled on nnInteractive's session: set the image once, then prompt per organ.

    generalist.set_image(image, spacing_zyx)      # once per case
    mask = generalist.segment(prompts)            # once per organ; interactions reset between organs
    generalist.close()
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ipnp.errors import IpnpError
from ipnp.pseudo.prompts import PromptPair


class GeneralistError(IpnpError):
    """A generalist could not be set up or could not answer (missing weights, unreachable server...)."""


class Generalist(ABC):
    """A frozen promptable segmenter answering two orthogonal 2D box prompts with a binary mask."""

    name: str = "generalist"

    @abstractmethod
    def set_image(self, image: np.ndarray, spacing_zyx: tuple[float, float, float]) -> None:
        """Set the case's image: unnormalised intensities (HU for CT), float32, (z, y, x)."""

    @abstractmethod
    def segment(self, prompts: PromptPair) -> np.ndarray:
        """A boolean (z, y, x) mask for one organ from its axial and sagittal box prompts."""

    def close(self) -> None:
        """Release the model, session or connection."""

    def __enter__(self) -> "Generalist":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
