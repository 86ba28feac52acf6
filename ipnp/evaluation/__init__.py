"""Scoring predicted label maps: per-organ DSC and HD95, with partial references respected."""

from ipnp.evaluation.evaluate import evaluate_folders
from ipnp.evaluation.metrics import dice, hd95, score_case

__all__ = ["evaluate_folders", "dice", "hd95", "score_case"]
