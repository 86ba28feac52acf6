"""Per-organ Dice and HD95 of a predicted label map against a reference.

HD95 is the 95th percentile of the surface distances of both directions pooled together (prediction
surface to reference surface and back), the definition medpy's ``hd95`` uses. MONAI extracts the surfaces
(voxels of the mask with a 6-neighbour outside it) and measures the spacing-aware Euclidean distances.
MONAI's own ``compute_hausdorff_distance(percentile=95)`` is not used: it returns the larger of the two
*directed* 95th percentiles, a different and larger number in general.

Empty masks (see ``docs/evaluation.md``): prediction and reference both empty give DSC 1.0 and HD95 0.0;
exactly one empty gives DSC 0.0 and, as a finite worst case that keeps means defined, HD95 equal to the
diagonal of the image's physical extent (``norm(shape * spacing)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

Box = tuple[slice, ...]


def dice(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice similarity coefficient of two boolean masks; 1.0 when both are empty."""
    pred_mask, ref_mask = _as_masks(pred_mask, ref_mask)
    total = np.count_nonzero(pred_mask) + np.count_nonzero(ref_mask)
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(pred_mask & ref_mask) / total)


def hd95(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between two boolean masks.

    ``spacing_zyx`` is the voxel size in the masks' axis order. Empty masks follow the module's conventions.
    """
    pred_mask, ref_mask = _as_masks(pred_mask, ref_mask)
    boxes = ndimage.find_objects(pred_mask.view(np.uint8)) + ndimage.find_objects(ref_mask.view(np.uint8))
    # With nothing to crop to, both masks are empty and the whole (cheap to test) volume is passed on.
    box = _union_box(boxes, pred_mask.shape) or ()
    return _cropped_hd95(pred_mask[box], ref_mask[box], spacing_zyx, _diagonal_mm(pred_mask.shape, spacing_zyx))


def score_case(
    pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], organs: Iterable[int]
) -> dict[int, tuple[float, float]]:
    """``{organ id: (DSC, HD95 in mm)}`` of two integer (z, y, x) label maps, for the organs asked for.

    Each organ is scored inside the bounding box of its prediction and reference plus one voxel, so the
    cost follows the organ's size rather than the volume's.
    """
    organs = [int(o) for o in organs]
    if any(o < 1 for o in organs):
        raise ValueError(f"organ ids must be positive (0 is background): {organs}")
    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} and {ref.shape}")
    top = max(organs, default=0)
    # One pass over each volume finds every organ's bounding box (list index = id - 1).
    pred_boxes = ndimage.find_objects(pred, max_label=top)
    ref_boxes = ndimage.find_objects(ref, max_label=top)
    worst = _diagonal_mm(pred.shape, spacing_zyx)
    scores = {}
    for organ in organs:
        box = _union_box((pred_boxes[organ - 1], ref_boxes[organ - 1]), pred.shape)
        if box is None:
            scores[organ] = (1.0, 0.0)
            continue
        pred_mask, ref_mask = pred[box] == organ, ref[box] == organ
        scores[organ] = (dice(pred_mask, ref_mask), _cropped_hd95(pred_mask, ref_mask, spacing_zyx, worst))
    return scores


def _cropped_hd95(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing_zyx: Sequence[float], worst: float) -> float:
    """HD95 of masks already cropped around their union; ``worst`` is the one-empty penalty."""
    has_pred, has_ref = bool(pred_mask.any()), bool(ref_mask.any())
    if not has_pred and not has_ref:
        return 0.0
    if not (has_pred and has_ref):
        return worst
    from monai.metrics import get_mask_edges, get_surface_distance  # MONAI takes seconds to import

    edges_pred, edges_ref = get_mask_edges(pred_mask, ref_mask, crop=False)
    spacing = [float(s) for s in spacing_zyx]
    distances = np.concatenate(
        [
            get_surface_distance(edges_pred, edges_ref, distance_metric="euclidean", spacing=spacing),
            get_surface_distance(edges_ref, edges_pred, distance_metric="euclidean", spacing=spacing),
        ]
    )
    # float64 so that the percentile's interpolation matches numpy-based references such as medpy.
    return float(np.percentile(distances.astype(np.float64), 95))


def _union_box(boxes: Iterable[Box | None], shape: tuple[int, ...], margin: int = 1) -> Box | None:
    """Smallest box holding all given boxes plus ``margin`` voxels, clipped to the volume; None if none.

    The margin is a rim of background around the organ, so its surface is found inside the crop exactly as
    in the full volume.
    """
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(
        slice(max(min(b[d].start for b in boxes) - margin, 0), min(max(b[d].stop for b in boxes) + margin, size))
        for d, size in enumerate(shape)
    )


def _diagonal_mm(shape: tuple[int, ...], spacing_zyx: Sequence[float]) -> float:
    if len(spacing_zyx) != len(shape):
        raise ValueError(f"spacing {tuple(spacing_zyx)} does not match a {len(shape)}D volume")
    return float(np.linalg.norm(np.multiply(shape, spacing_zyx, dtype=np.float64)))


def _as_masks(pred_mask: np.ndarray, ref_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_mask, ref_mask = np.asarray(pred_mask, dtype=bool), np.asarray(ref_mask, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"masks differ in shape: {pred_mask.shape} and {ref_mask.shape}")
    return pred_mask, ref_mask
