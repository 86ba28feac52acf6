"""Converters from public dataset releases to ipnp's partial-label convention."""

from ipnp.data.convert.amos import convert_amos
from ipnp.data.convert.openkbp import convert_openkbp

__all__ = ["convert_amos", "convert_openkbp"]
