"""Datasets in ipnp's partial-label convention: nnU-Net v2 raw layout plus ``partial_labels.json``."""

from ipnp.data.dataset import PartialDataset
from ipnp.data.io import Geometry, read_image, write_image

__all__ = ["PartialDataset", "Geometry", "read_image", "write_image"]
