"""ipnp: iteratively prompting and pseudo-labeling for partially labeled 3D multi-organ segmentation."""

__version__ = "0.1.0"
