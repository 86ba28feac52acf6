"""Generalists: frozen promptable models that turn two box prompts into a candidate mask."""

from ipnp.generalist.base import Generalist, GeneralistError

__all__ = ["Generalist", "GeneralistError"]
