"""The classical generalist: zero-shot, weight-free box-prompted segmentation on the CPU.

It answers the two orthogonal box prompts of one organ with established interactive-segmentation
algorithms; every parameter is fixed or derived from the image and the prompts, never from the organ.

1. **Prompt slices (2D).** The box prompts are tight bounding boxes plus ``padding``, so on each prompt
   slice the organ lies inside the *tight* box and touches all four of its sides. Both slices are
   segmented together by GrabCut-style EM (intensity histograms re-estimated from the current masks, an
   ellipse prior inscribed in the tight box) with a graph cut (PyMaxflow) whose two grids share the line
   where the slices cross, and Lempitsky's *pinpointing* enforces the tightness prior (every row and
   column of a tight box holds some organ). A slice whose box is much wider than the organ's width on the
   crossing line holds an oblique or curved structure (spinal cord, oesophagus, mandible): it is re-traced
   by dynamic programming as one interval per row, grown from the crossing line with costs on width
   changes and on moving ends, with the other slice's intensities as the organ model; a sagittal slice
   also scores where the axial mask, tracked slice by slice along z (template tracking, as in step 2),
   crosses it. A slice whose plane
   the other slice's tight box does not reach (the organ does not cross the line where the slices meet)
   is re-cut with the other slice's organ intensities, pinned on the box's sides only (the organ may be
   in pieces there).
2. **Volume (3D).** Two shape priors sweep each slice mask across the organ's extent: the axial mask
   along the body axis and the sagittal mask along the left-right axis, each following the image by
   template tracking (normalised cross-correlation) and shrunk by the other mask's widths; the prior is
   their maximum. The boxes also bound the organ: along z the sagittal box, along x the axial box, each
   widened to be centred on the other prompt slice (prompts are median slices, mid-extent). Outside
   these bounds, where no prior reaches, voxels are penalised and seed the random walker as background.
   A final graph cut combines the intensity log-likelihood ratio (organ intensities from the slice masks'
   cores, without their boundary voxels), the prior, the bounds and the probability of scikit-image's
   random walker seeded with the two slice masks; the components touching those masks are kept.

The work is done on the prompts' ROI (``PromptPair.roi``), transposed so that axis 0 is the axial
slices' normal and axis 2 the sagittal slices'; the mask is zero outside the ROI.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import maxflow
import numpy as np
from scipy import ndimage
from skimage.segmentation import random_walker

from ipnp.generalist.base import Generalist, GeneralistError
from ipnp.pseudo.prompts import PromptPair

Range = tuple[int, int]

_SMOOTH_SIGMA = 0.6  # voxels: suppresses CT noise while keeping two-voxel structures
_SLICE_SMOOTH_SIGMA = 0.5  # voxels, in-plane only
_ROI_DILATION = 3  # the ROI beyond the boxes, as in the IPnP paper (Eq. 2)
_EM_ITERATIONS = 3
_PIN_ROUNDS = 6
_SLICE_SMOOTHNESS = 0.5  # edge weight of the 2D cuts; weak: soft-tissue edges are weak in CT
_SLICE_PRIOR_WEIGHT = 1.0  # weight of the ellipse prior's log-odds in the 2D cuts
_BORDER_PRIOR = 0.4  # at most this ellipse prior where a box clipped by the image border may or may not hold organ
_OBLIQUE_RATIO = 0.6  # organ width on the crossing line / box width below which a slice is re-traced
_DP_STEP = 2  # voxels an interval's end may move from one row to the next
_DP_MOVE_COST = 1.5  # per voxel an interval's end moves from one row to the next: no jumps into side gaps
_DP_WIDTH_COST = 2.0  # per voxel of width away from the width on the crossing line
_TRACKED_WEIGHT = 1.0  # weight of the tracked cross-section in a re-traced slice's score
_DP_UNREACHABLE = -1e12  # finite, so that move costs can be added to it
_DP_STEPS = np.arange(-_DP_STEP, _DP_STEP + 1)
# The gain of moving the ends (left, right) of an interval from one row to the next.
_DP_MOVES = -_DP_MOVE_COST * (np.abs(_DP_STEPS)[:, None] + np.abs(_DP_STEPS)[None, :])
_VOLUME_BANDWIDTH = 20.0  # HU: kernel width of the 3D intensity histograms
_LLR_CLIP = 4.0
_PRIOR_CLIP = 0.02
_RW_BETA = 1000.0
_RW_WEIGHT = 1.0
_VOLUME_SMOOTHNESS = 1.0
_PRIOR_FLOOR = 0.01  # a prior below this counts as no prior
_FACE_PRIOR = 0.2  # the crop's faces seed the walk as background where the prior is below this
_EXTENT_PENALTY = 3.0  # per voxel outside the organ's extent (from the boxes) where the prior does not reach
_TRACK_MARGIN = 3  # voxels of context around the axial mask compared while tracking
_TRACK_S_WEIGHT = 0.3  # weight of agreeing with the sagittal mask while tracking
_TRACK_MOVES = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # one tracking step's choices
_SCALE_RANGE = (0.3, 1.0)  # the sagittal mask may shrink a swept cross-section, never widen it
# Voxels of a work crop segmented at full resolution. The random walker and the graph cut need a few
# hundred bytes per voxel; a larger crop (a whole-abdomen box from a barely trained specialist) is
# segmented on a coarser grid, which keeps one organ's peak memory near 1.5 GB.
_VOXEL_BUDGET = 2**22


class ClassicalGeneralist(Generalist):
    """Graph cuts, dynamic programming and a random walker on the prompts' ROI; no weights, CPU only.

    ``padding`` is the margin the box prompts were made with (``box_prompts``'s default): it tells the
    method where the organ's tight bounding box is.
    """

    name = "classical"

    def __init__(self, padding: int = 6) -> None:
        if padding < 0:
            raise ValueError(f"padding must not be negative, got {padding}")
        self.padding = padding
        self._image: np.ndarray | None = None

    def set_image(self, image: np.ndarray, spacing_zyx: tuple[float, float, float]) -> None:
        """Keep the case's image; ``spacing_zyx`` is not needed, the method works in voxels."""
        if image.ndim != 3:
            raise GeneralistError(f"expected a 3D image, got shape {image.shape}")
        self._image = np.asarray(image, dtype=np.float32)

    def segment(self, prompts: PromptPair) -> np.ndarray:
        """The organ's boolean (z, y, x) mask, zero outside the prompts' ROI."""
        if self._image is None:
            raise GeneralistError("set_image must be called before segment")
        image = self._image
        axial_axis, sagittal_axis = prompts.axial.plane_axis, prompts.sagittal.plane_axis
        if axial_axis == sagittal_axis:
            raise GeneralistError("the axial and sagittal prompts lie on parallel slices")
        order = (axial_axis, 3 - axial_axis - sagittal_axis, sagittal_axis)
        roi = prompts.roi(image.shape, _ROI_DILATION)
        # The work crop also holds both prompt slices, which the ROI need not contain.
        planes = {
            axial_axis: prompts.axial.bounds[axial_axis][0],
            sagittal_axis: prompts.sagittal.bounds[sagittal_axis][0],
        }
        work = tuple(
            slice(min(r.start, planes.get(a, r.start)), max(r.stop, planes.get(a, r.start) + 1))
            for a, r in enumerate(roi)
        )
        volume = np.transpose(image[work], order)
        axial = _box_in(_tight_box(prompts.axial.bounds, image.shape, self.padding), work, order)
        sagittal = _box_in(_tight_box(prompts.sagittal.bounds, image.shape, self.padding), work, order)
        # Tight ranges: (rows, cols) of the axial slice, (y, x), and of the sagittal slice, (z, y).
        sure_a = _box_in(_sure_box(prompts.axial.bounds, image.shape, self.padding), work, order)
        sure_s = _box_in(_sure_box(prompts.sagittal.bounds, image.shape, self.padding), work, order)
        boxes = SliceBoxes([axial[1], axial[2]], [sagittal[0], sagittal[1]], [sure_a[1], sure_a[2]], [sure_s[0], sure_s[1]])
        crop = _segment_within_budget(volume, axial[0][0], sagittal[2][0], boxes)

        mask = np.zeros(image.shape, dtype=bool)
        mask[work] = np.transpose(crop, np.argsort(order))
        return mask & prompts.roi_mask(image.shape, _ROI_DILATION)


def _tight_box(bounds: tuple[Range, Range, Range], shape: tuple[int, ...], padding: int) -> list[Range]:
    """A box prompt's tight box: its bounds less the padding, except on sides clipped by the image border."""
    tight = []
    for (lo, hi), size in zip(bounds, shape):
        inner = (lo + padding if lo > 0 else lo), (hi - padding if hi < size else hi)
        # The slice axis (size 1) has no padding, nor has a box narrower than it.
        tight.append(inner if hi - lo > 1 and inner[1] > inner[0] else (lo, hi))
    return tight


def _sure_box(bounds: tuple[Range, Range, Range], shape: tuple[int, ...], padding: int) -> list[Range]:
    """The part of the tight box that the organ certainly spans. A side clipped by the image border says
    only that the organ ends within ``padding`` voxels of the border (or is cut off by it): of that side,
    only the voxel ``padding - 1`` from the border surely holds organ."""
    sure = []
    for (lo, hi), (tlo, thi), size in zip(bounds, _tight_box(bounds, shape, padding), shape):
        if hi - lo > 1 and thi - tlo > 1:
            if lo == 0:
                tlo = min(padding - 1, thi - 1)
            if hi == size:
                thi = max(size - padding + 1, tlo + 1)
        sure.append((tlo, thi))
    return sure


def _box_in(bounds: list[Range], work: tuple[slice, ...], order: tuple[int, int, int]) -> list[Range]:
    """Bounds relative to the work crop, in the crop's transposed axis order."""
    return [(bounds[a][0] - work[a].start, bounds[a][1] - work[a].start) for a in order]


class SliceBoxes(NamedTuple):
    """The prompt slices' boxes in the crop: tight (rows, cols) of the axial slice, (y, x), and of the sagittal
    slice, (z, y); and the parts of them the organ surely spans, which differ at a side clipped by the border."""

    tight_a: list[Range]
    tight_s: list[Range]
    sure_a: list[Range]
    sure_s: list[Range]


# The crop axes that each box's (rows, cols) run along, in SliceBoxes' order.
_BOX_AXES = ((1, 2), (0, 1), (1, 2), (0, 1))


def _segment_within_budget(volume: np.ndarray, za: int, xs: int, boxes: SliceBoxes) -> np.ndarray:
    """:func:`_segment_crop`, on a grid ``stride`` times coarser (through both prompt slices) when the crop
    exceeds the voxel budget; the coarse mask is brought back to the crop's grid by nearest neighbour."""
    stride = max(1, math.ceil((volume.size / _VOXEL_BUDGET) ** (1 / 3)))
    if stride == 1:
        return _segment_crop(volume, za, xs, boxes)
    origin = (za % stride, 0, xs % stride)  # the coarse grid keeps both prompt slices
    grid = tuple(slice(o, None, stride) for o in origin)
    coarse = ndimage.gaussian_filter(volume.astype(np.float32), stride / 2)[grid]  # low-passed, not aliased

    def down(span: Range, axis: int) -> Range:
        lo = -(-(span[0] - origin[axis]) // stride)
        return lo, max(lo + 1, (span[1] - 1 - origin[axis]) // stride + 1)

    coarse_boxes = SliceBoxes(*([down(rows, a), down(cols, b)] for (rows, cols), (a, b) in zip(boxes, _BOX_AXES)))
    mask = _segment_crop(coarse, (za - origin[0]) // stride, (xs - origin[2]) // stride, coarse_boxes)
    nearest = [
        np.clip(np.floor((np.arange(n) - o) / stride + 0.5).astype(int), 0, c - 1)
        for n, o, c in zip(volume.shape, origin, mask.shape)
    ]
    return mask[np.ix_(*nearest)]


def _segment_crop(volume: np.ndarray, za: int, xs: int, boxes: SliceBoxes) -> np.ndarray:
    """The organ in a canonical crop: axis 0 across axial slices (``za``), axis 2 across sagittal ones (``xs``)."""
    tight_a, tight_s, sure_a, sure_s = boxes
    volume = volume.astype(np.float32)
    # The prompt slices are smoothed in-plane only: thin structures keep their contrast.
    axial_image = ndimage.gaussian_filter(volume[za], _SLICE_SMOOTH_SIGMA)
    sagittal_image = ndimage.gaussian_filter(volume[:, :, xs], _SLICE_SMOOTH_SIGMA)
    axial, sagittal = _segment_slices(axial_image, sagittal_image, tight_a, tight_s, za, xs, sure_a, sure_s)
    smooth = ndimage.gaussian_filter(volume, _SMOOTH_SIGMA)
    axial, sagittal = _redo_from_other_slice(
        smooth, axial_image, sagittal_image, axial, sagittal, tight_a, tight_s, za, xs
    )
    if not (axial.any() or sagittal.any()):
        return np.zeros(volume.shape, dtype=bool)
    return _segment_volume(smooth, axial, sagittal, za, xs, tight_s[0], tight_a[1], sure_s[0], sure_a[1])


# --- intensity models -------------------------------------------------------------------------------


class _IntensityModel:
    """Foreground/background log-likelihood ratio of intensities from weighted, smoothed histograms."""

    def __init__(self, values: np.ndarray, w_fg: np.ndarray, w_bg: np.ndarray, bandwidth: float) -> None:
        self.step = bandwidth / 2
        self.lo = float(values.min()) - 3 * bandwidth
        bins = int((float(values.max()) + 3 * bandwidth - self.lo) / self.step) + 2
        index = self._index(values, bins)
        # Smoothing by two bins makes the kernel width the bandwidth.
        fg = ndimage.gaussian_filter1d(np.bincount(index, w_fg.ravel(), bins), 2.0)
        bg = ndimage.gaussian_filter1d(np.bincount(index, w_bg.ravel(), bins), 2.0)
        eps = 1e-4  # keeps unseen intensities finite and near-neutral
        self.llr = np.log(fg / max(fg.sum(), 1e-12) + eps) - np.log(bg / max(bg.sum(), 1e-12) + eps)

    def _index(self, values: np.ndarray, bins: int) -> np.ndarray:
        """Histogram bin of each value, flattened."""
        return np.clip(((values.ravel() - self.lo) / self.step).astype(np.int64), 0, bins - 1)

    def __call__(self, values: np.ndarray, clip: float) -> np.ndarray:
        """The log-likelihood ratio of each value, clipped to +-``clip`` (histogram tails are unreliable)."""
        return np.clip(self.llr[self._index(values, len(self.llr))].reshape(values.shape), -clip, clip)


def _noise_scale(*images: np.ndarray) -> float:
    """Median absolute difference of neighbouring voxels: the contrast of an ordinary, edge-free step."""
    diffs = [np.abs(np.diff(image, axis=a)).ravel() for image in images for a in range(image.ndim)]
    return float(np.median(np.concatenate(diffs)))


def _logit(p: np.ndarray, clip: float) -> np.ndarray:
    """Log-odds of probabilities clipped to [clip, 1 - clip]."""
    p = np.clip(p, clip, 1 - clip)
    return np.log(p / (1 - p))


# --- graph cuts --------------------------------------------------------------------------------------


def _add_grid(graph: maxflow.Graph, image: np.ndarray, weight: float, sigma: float) -> np.ndarray:
    """Nodes for an image with contrast-sensitive edges to axis neighbours (cheap across strong edges)."""
    ids = graph.add_grid_nodes(image.shape)
    for axis in range(image.ndim):
        weights = np.zeros(image.shape)
        inner = [slice(None)] * image.ndim
        inner[axis] = slice(0, -1)
        weights[tuple(inner)] = weight * np.exp(-np.diff(image, axis=axis) ** 2 / (2 * sigma**2))
        structure = np.zeros((3,) * image.ndim)
        centre = [1] * image.ndim
        centre[axis] = 2
        structure[tuple(centre)] = 1
        graph.add_grid_edges(ids, weights=weights, structure=structure, symmetric=True)
    return ids


def _terminal_edges(graph: maxflow.Graph, ids: np.ndarray, unary: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> None:
    """Positive unaries pull to the organ, negative ones to background; ``fg``/``bg`` are hard."""
    hard = 1e9
    graph.add_grid_tedges(ids, np.maximum(unary, 0) + hard * fg, np.maximum(-unary, 0) + hard * (bg & ~fg))


# --- 2D: the prompt slices ------------------------------------------------------------------------------


def _ellipse_prior(
    shape: tuple[int, int], rows: Range, cols: Range, reach: list[Range] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A soft ellipse inscribed in a tight box (0.1 to 0.9 inside ``reach``, by default the box itself)
    and the mask of ``reach``."""
    reach = reach or [rows, cols]
    inside = np.zeros(shape, dtype=bool)
    inside[reach[0][0] : reach[0][1], reach[1][0] : reach[1][1]] = True
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    radius = np.hypot(
        (yy - (rows[0] + rows[1] - 1) / 2) / ((rows[1] - rows[0]) / 2),
        (xx - (cols[0] + cols[1] - 1) / 2) / ((cols[1] - cols[0]) / 2),
    )
    return np.clip(0.5 + 1.5 * (1 - radius), 0.1, 0.9) * inside, inside


def _pin_empty_lines(
    mask: np.ndarray,
    unary: np.ndarray,
    allowed: np.ndarray,
    rows: Range,
    cols: Range,
    pins: np.ndarray,
    sides_only: bool = False,
) -> bool:
    """Pinpointing: in each row and column of the tight box without organ, fix its likeliest allowed
    pixel as organ. Returns whether a pin was added.

    A connected organ crosses every row and column of its bounding box (Lempitsky et al., ICCV 2009); an
    organ that may fall apart in the slice (``sides_only``) still touches the box's four sides.
    """
    score = np.where(allowed, unary, -np.inf)
    added = False
    row_lines = (rows[0], rows[1] - 1) if sides_only else range(*rows)
    col_lines = (cols[0], cols[1] - 1) if sides_only else range(*cols)
    for r in row_lines:
        line = score[r, cols[0] : cols[1]]
        if not mask[r, cols[0] : cols[1]].any() and np.isfinite(line.max()):
            pins[r, cols[0] + int(np.argmax(line))] = added = True
    for c in col_lines:
        line = score[rows[0] : rows[1], c]
        if not mask[rows[0] : rows[1], c].any() and np.isfinite(line.max()):
            pins[rows[0] + int(np.argmax(line)), c] = added = True
    return added


def _segment_slices(
    axial_image: np.ndarray,
    sagittal_image: np.ndarray,
    tight_a: list[Range],
    tight_s: list[Range],
    za: int,
    xs: int,
    sure_a: list[Range],
    sure_s: list[Range],
) -> tuple[np.ndarray, np.ndarray]:
    """Joint GrabCut of the axial (y, x) and sagittal (z, y) prompt slices, crossing at y-line (za, xs).

    The ellipse prior is inscribed in the part of each tight box that the organ surely spans (``sure_a``,
    ``sure_s``); between it and a side clipped by the image border the organ may end or go on, and the
    ellipse inscribed in the whole tight box gives at most ``_BORDER_PRIOR`` there. Pins keep to the sure
    part."""
    prior_a, box_a = _ellipse_prior(axial_image.shape, *sure_a, reach=tight_a)
    prior_s, box_s = _ellipse_prior(sagittal_image.shape, *sure_s, reach=tight_s)
    prior_a = np.maximum(prior_a, np.minimum(_ellipse_prior(axial_image.shape, *tight_a)[0], _BORDER_PRIOR))
    prior_s = np.maximum(prior_s, np.minimum(_ellipse_prior(sagittal_image.shape, *tight_s)[0], _BORDER_PRIOR))
    # On the crossing line each slice's organ lies within the other's tight y-range.
    box_a[:, xs] &= _range_mask(axial_image.shape[0], tight_s[1])
    box_s[za, :] &= _range_mask(axial_image.shape[0], tight_a[0])
    prior_a *= box_a
    prior_s *= box_s
    sigma = max(1.5 * _noise_scale(axial_image, sagittal_image), 5.0)
    values = np.concatenate([axial_image.ravel(), sagittal_image.ravel()])
    shape_a = _SLICE_PRIOR_WEIGHT * _logit(prior_a, 1e-3)
    shape_s = _SLICE_PRIOR_WEIGHT * _logit(prior_s, 1e-3)
    w_fg = np.concatenate([prior_a.ravel(), prior_s.ravel()])
    for _ in range(_EM_ITERATIONS):
        llr = _IntensityModel(values, w_fg, 1 - w_fg, sigma)(values, 5.0)
        unary_a = llr[: axial_image.size].reshape(axial_image.shape) + shape_a
        unary_s = llr[axial_image.size :].reshape(sagittal_image.shape) + shape_s
        pins_a, pins_s = np.zeros(box_a.shape, bool), np.zeros(box_s.shape, bool)
        for _ in range(_PIN_ROUNDS):
            axial, sagittal = _cut_slice_pair(
                axial_image, sagittal_image, unary_a, unary_s, box_a, box_s, pins_a, pins_s, za, xs, sigma
            )
            pinned_a = _pin_empty_lines(axial, unary_a, box_a, *sure_a, pins_a)
            pinned_s = _pin_empty_lines(sagittal, unary_s, box_s, *sure_s, pins_s)
            if not (pinned_a or pinned_s):
                break
        # Soft masks as the next histogram weights keep EM from locking onto the first cut's boundary.
        w_fg = np.concatenate([_soft(axial, box_a).ravel(), _soft(sagittal, box_s).ravel()])
    return axial, sagittal


def _soft(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A mask blurred into organ weights of 0.1 to 0.9 inside its box, 0 outside."""
    return np.where(box, 0.1 + 0.8 * ndimage.gaussian_filter(mask.astype(float), 1.0), 0.0)


def _range_mask(size: int, span: Range) -> np.ndarray:
    """A 1D mask of ``span``."""
    mask = np.zeros(size, dtype=bool)
    mask[span[0] : span[1]] = True
    return mask


def _cut_slice_pair(
    axial_image: np.ndarray,
    sagittal_image: np.ndarray,
    unary_a: np.ndarray,
    unary_s: np.ndarray,
    box_a: np.ndarray,
    box_s: np.ndarray,
    pins_a: np.ndarray,
    pins_s: np.ndarray,
    za: int,
    xs: int,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One graph cut of both slices; the voxels they share are tied so that the slices agree there."""
    graph = maxflow.Graph[float]()
    ids_a = _add_grid(graph, axial_image, _SLICE_SMOOTHNESS, sigma)
    ids_s = _add_grid(graph, sagittal_image, _SLICE_SMOOTHNESS, sigma)
    _terminal_edges(graph, ids_a, unary_a, pins_a, ~box_a)
    _terminal_edges(graph, ids_s, unary_s, pins_s, ~box_s)
    for y in range(axial_image.shape[0]):
        graph.add_edge(int(ids_a[y, xs]), int(ids_s[za, y]), 1e9, 1e9)
    graph.maxflow()
    return ~graph.get_grid_segments(ids_a) & box_a, ~graph.get_grid_segments(ids_s) & box_s


def _main_run(line: np.ndarray, span: Range) -> Range | None:
    """The longest run of organ on a line, within ``span``."""
    labels, count = ndimage.label(line[span[0] : span[1]])
    if count == 0:
        return None
    longest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    hits = np.flatnonzero(labels == longest) + span[0]
    return int(hits[0]), int(hits[-1]) + 1


def _redo_from_other_slice(
    smooth: np.ndarray,
    axial_image: np.ndarray,
    sagittal_image: np.ndarray,
    axial: np.ndarray,
    sagittal: np.ndarray,
    tight_a: list[Range],
    tight_s: list[Range],
    za: int,
    xs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Redo a slice that the joint cut gets wrong, with the other slice's organ intensities.

    - A slice whose plane the other slice's tight box does not reach cuts the organ away from the
      crossing line (the axial slice of a U-shaped bone above the bend that the sagittal slice shows):
      nothing ties it to the other slice, and its own EM can settle on the tissue around the organ. It is
      re-cut.
    - A slice whose organ is much narrower on the crossing line than its box is wide holds an oblique or
      curved structure, which the ellipse prior fills. It is re-traced as one interval per row, grown from
      the other slice's organ on the crossing line. A sagittal re-trace also follows the axial mask tracked
      along z; an axial one does not follow the sagittal mask tracked along x, which bends away from
      curved structures in the axial plane.
    """
    if not tight_s[0][0] <= za < tight_s[0][1]:
        if sagittal.any():
            axial = _cut_slice(axial_image, _model_from(sagittal_image, sagittal, tight_s, axial_image, tight_a), tight_a)
        return axial, sagittal
    if not tight_a[1][0] <= xs < tight_a[1][1]:
        if axial.any():
            llr = _model_from(axial_image, axial, tight_a, sagittal_image, tight_s)
            sagittal = _cut_slice(sagittal_image, llr, tight_s)
        return axial, sagittal
    run_a = _main_run(axial[:, xs], tight_s[1])  # the axial organ on the line, where the sagittal box allows
    run_s = _main_run(sagittal[za, :], tight_a[0])
    ratio_s = 0.0 if run_a is None else (run_a[1] - run_a[0]) / (tight_s[1][1] - tight_s[1][0])
    ratio_a = 0.0 if run_s is None else (run_s[1] - run_s[0]) / (tight_a[0][1] - tight_a[0][0])
    if ratio_s < _OBLIQUE_RATIO <= ratio_a and run_a is not None:
        llr = _model_from(axial_image, axial, tight_a, sagittal_image, tight_s)
        llr += _tracked_prior(smooth, axial, za, xs, tight_s[0])
        sagittal = _interval_dp(llr, za, run_a, tight_s[0], tight_s[1])
    elif ratio_a < _OBLIQUE_RATIO <= ratio_s and run_s is not None:
        llr = _model_from(sagittal_image, sagittal, tight_s, axial_image, tight_a)
        # Along x, from the crossing line: rows of the transposed axial slice.
        axial = _interval_dp(llr.T, xs, run_s, tight_a[1], tight_a[0]).T
    return axial, sagittal


def _tracked_prior(smooth: np.ndarray, axial: np.ndarray, za: int, xs: int, z_span: Range) -> np.ndarray:
    """A score for the sagittal slice (z, y) from the axial mask tracked across ``z_span``: about
    +-``_TRACKED_WEIGHT`` where the tracked mask crosses the sagittal plane or not (blurred by a voxel).

    An oblique tube's cross-section keeps its surroundings from slice to slice (the cord in its bony
    canal), which the sagittal slice alone does not show where the tube's wall has gaps.
    """
    shifts = _track(smooth, axial, np.zeros(smooth.shape[:2], dtype=bool), za, xs, z_span)
    tracked = np.zeros(smooth.shape[:2])
    for z, (dy, dx) in shifts.items():
        if 0 <= xs - dx < axial.shape[1]:
            tracked[z] = _shift(axial[:, xs - dx : xs - dx + 1], dy, 0)[:, 0]
    return _TRACKED_WEIGHT * (2 * ndimage.gaussian_filter(tracked, 1.0) - 1)


def _cut_slice(image: np.ndarray, unary: np.ndarray, tight: list[Range]) -> np.ndarray:
    """Graph cut of one slice inside its tight box, pinned on the box's sides only: the slice does not
    reach the crossing line, where the organ may be in pieces (a U-shaped bone above its bend), and
    pins in the rows and columns between the pieces would add tissue between them."""
    box = _box_mask(image.shape, tight)
    sigma = max(1.5 * _noise_scale(image), 5.0)
    pins = np.zeros(image.shape, dtype=bool)
    for _ in range(_PIN_ROUNDS):
        graph = maxflow.Graph[float]()
        ids = _add_grid(graph, image, _SLICE_SMOOTHNESS, sigma)
        _terminal_edges(graph, ids, unary, pins, ~box)
        graph.maxflow()
        mask = ~graph.get_grid_segments(ids) & box
        if not _pin_empty_lines(mask, unary, box, *tight, pins, sides_only=True):
            break
    return mask


def _model_from(
    source: np.ndarray,
    source_mask: np.ndarray,
    source_tight: list[Range],
    target: np.ndarray,
    target_tight: list[Range],
) -> np.ndarray:
    """The target slice's LLR with the organ's intensities from the source slice's mask and background
    from outside both tight boxes (certain background)."""
    outside_s = ~_box_mask(source.shape, source_tight)
    outside_t = ~_box_mask(target.shape, target_tight)
    values = np.concatenate([source.ravel(), target.ravel()])
    w_fg = np.concatenate([source_mask.ravel(), np.zeros(target.size)]).astype(float)
    w_bg = np.concatenate([outside_s.ravel(), outside_t.ravel()]).astype(float)
    model = _IntensityModel(values, w_fg, w_bg, _VOLUME_BANDWIDTH)
    return model(target, 5.0)


def _box_mask(shape: tuple[int, ...], ranges: list[Range]) -> np.ndarray:
    """A mask of the box given by one range per axis."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(lo, hi) for lo, hi in ranges)] = True
    return mask


def _interval_dp(score: np.ndarray, start_row: int, start: Range, rows: Range, cols: Range) -> np.ndarray:
    """One interval per row of ``rows`` within ``cols``, grown both ways from ``start`` at ``start_row``.

    Maximises the summed ``score`` inside the intervals, less a cost per voxel of width away from the
    start width and a cost per voxel that an end moves from one row to the next (at most ``_DP_STEP``);
    Viterbi over the states (left, right).
    """
    mask = np.zeros(score.shape, dtype=bool)
    mask[start_row, start[0] : start[1]] = True
    n = score.shape[1]
    cumulative = np.concatenate([np.zeros((score.shape[0], 1)), np.cumsum(score, axis=1)], axis=1)
    left, right = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    valid = (right > left) & (left >= cols[0]) & (right <= cols[1])
    width_cost = _DP_WIDTH_COST * np.abs((right - left) - (start[1] - start[0]))
    for path in (range(start_row + 1, rows[1]), range(start_row - 1, rows[0] - 1, -1)):
        path = list(path)
        if not path:
            continue
        total = np.full((n + 1, n + 1), _DP_UNREACHABLE)
        total[start] = 0.0
        tables = []
        for row in path:
            reachable = ndimage.grey_dilation(total, structure=_DP_MOVES, mode="constant", cval=_DP_UNREACHABLE)
            gain = cumulative[row][right] - cumulative[row][left] - width_cost
            total = np.where(valid, reachable + gain, _DP_UNREACHABLE)
            tables.append(total)
        state = np.unravel_index(int(np.argmax(total)), total.shape)
        for k in range(len(path) - 1, -1, -1):
            mask[path[k], state[0] : state[1]] = True
            if k:
                state = _best_predecessor(tables[k - 1], state)
    return mask


def _best_predecessor(table: np.ndarray, state: tuple[int, int]) -> tuple[int, int]:
    """The best state of the previous row from which ``state`` is reached (back-tracking)."""
    lo = [max(0, s - _DP_STEP) for s in state]
    window = table[lo[0] : state[0] + _DP_STEP + 1, lo[1] : state[1] + _DP_STEP + 1]
    offset = [lo[0] - state[0] + _DP_STEP, lo[1] - state[1] + _DP_STEP]
    moves = _DP_MOVES[offset[0] : offset[0] + window.shape[0], offset[1] : offset[1] + window.shape[1]]
    i, j = np.unravel_index(int(np.argmax(window + moves)), window.shape)
    return lo[0] + int(i), lo[1] + int(j)


# --- 3D: the volume ----------------------------------------------------------------------------------


def _segment_volume(
    smooth: np.ndarray, axial: np.ndarray, sagittal: np.ndarray, za: int, xs: int, z_span: Range, x_span: Range,
    z_sure: Range, x_sure: Range,
) -> np.ndarray:
    """Graph cut of the crop: intensity LLR + swept shape prior + random-walker probability, and a
    penalty outside the organ's extent where the prior does not reach.

    ``z_span`` and ``x_span`` are the tight ranges of the sagittal box along z and of the axial box along x;
    ``z_sure`` and ``x_sure`` the parts of them the organ surely spans (they differ at a side clipped by the
    image border).
    """
    on_slices = np.zeros(smooth.shape, dtype=bool)
    on_slices[za] = True
    on_slices[:, :, xs] = True
    organ = np.zeros(smooth.shape, dtype=bool)
    organ[za] = axial
    organ[:, :, xs] |= sagittal
    background = on_slices & ~organ

    # The organ's intensities from the masks' cores: their boundary voxels mix organ and surroundings.
    core = np.zeros(smooth.shape, dtype=bool)
    core[za] = _core(axial)
    core[:, :, xs] |= _core(sagittal)
    values = smooth[on_slices]
    weights = core[on_slices].astype(float), background[on_slices].astype(float)
    model = _IntensityModel(values, *weights, _VOLUME_BANDWIDTH)
    # The organ's extent along z and x: the other slice's box, centred on the prompt slice (prompts are
    # median slices, which lie mid-extent) and clipped to the crop.
    # A side clipped by the image border is uncertain: the span is centred on what the organ surely spans
    # (``z_sure``, ``x_sure``), and reaches to the border all the same.
    z_span = _hull(_centred(z_sure, za, smooth.shape[0]), z_span)
    x_span = _hull(_centred(x_sure, xs, smooth.shape[2]), x_span)
    # Each slice mask swept across its extent: the axial one along z, the sagittal one along x (the same
    # sweep on the crop with z and x swapped), so that an organ running along either axis is covered.
    along_z = _swept_prior(smooth, axial, sagittal, za, xs, z_span)
    swapped = np.ascontiguousarray(smooth.transpose(2, 1, 0))
    along_x = _swept_prior(swapped, sagittal.T, axial.T, xs, za, x_span).transpose(2, 1, 0)
    prior = ndimage.gaussian_filter(np.maximum(along_z, along_x), 1.0)
    outside = ~_extent(smooth.shape, axial, sagittal, z_span, x_span)
    # Where neither the extent nor the prior leaves room for the organ, the walk starts from background:
    # this also leaves the walk far fewer unknowns.
    # The crop's faces are background too, except where the prior reaches them: an organ may leave the ROI
    # (a pancreatic tail beyond the axial box), and a face seed there would pull the walk to zero near it.
    walk = _random_walk(smooth, organ, background | (outside & (prior < _PRIOR_FLOOR) & ~organ), prior < _FACE_PRIOR)
    unary = model(smooth, _LLR_CLIP) + _logit(prior, _PRIOR_CLIP) + _RW_WEIGHT * _logit(walk, 0.01)
    unary -= _EXTENT_PENALTY * outside * (1 - prior)

    graph = maxflow.Graph[float]()
    ids = _add_grid(graph, smooth, _VOLUME_SMOOTHNESS, max(_noise_scale(smooth), 1.0))
    _terminal_edges(graph, ids, unary, organ, background)
    graph.maxflow()
    labels, _ = ndimage.label(~graph.get_grid_segments(ids))
    # Drop islands the cut found elsewhere in the ROI: the organ is what connects to the prompted slices.
    keep = np.unique(labels[organ])
    return np.isin(labels, keep[keep > 0])


def _core(mask: np.ndarray) -> np.ndarray:
    """``mask`` less its boundary, or ``mask`` itself where nothing would be left (a thin structure)."""
    eroded = ndimage.binary_erosion(mask)
    return eroded if eroded.any() else mask


def _extent(shape: tuple[int, ...], axial: np.ndarray, sagittal: np.ndarray, z_span: Range, x_span: Range) -> np.ndarray:
    """The box of the organ's extent: ``z_span`` and ``x_span``, and along y that of the slice masks."""
    rows = np.flatnonzero(axial.any(axis=1) | sagittal.any(axis=0))
    box = np.zeros(shape, dtype=bool)
    if rows.size:
        box[z_span[0] : z_span[1], rows[0] : rows[-1] + 1, x_span[0] : x_span[1]] = True
    return box


def _hull(a: Range, b: Range) -> Range:
    """The smallest range holding both ranges."""
    return min(a[0], b[0]), max(a[1], b[1])


def _centred(span: Range, centre: int, size: int) -> Range:
    """The smallest range holding ``span`` and ``centre`` whose middle is ``centre``, clipped to ``size``."""
    lo, hi = min(span[0], centre), max(span[1], centre + 1)
    return max(0, min(lo, 2 * centre + 1 - hi)), min(size, max(hi, 2 * centre + 1 - lo))


def _random_walk(smooth: np.ndarray, organ: np.ndarray, background: np.ndarray, faces_allowed: np.ndarray) -> np.ndarray:
    """Probability that a random walker from each voxel first reaches the organ seeds (Grady 2006).

    ``background`` and the crop's faces (the ROI's border, beyond the boxes) where ``faces_allowed`` holds are
    background seeds.
    """
    seeds = np.where(background, 2, 0)
    faces = np.ones(smooth.shape, dtype=bool)
    faces[1:-1, 1:-1, 1:-1] = False
    faces &= faces_allowed
    seeds[faces] = 2
    seeds[organ] = 1
    # Intensities in units of the crop's spread (air and metal clipped so as not to dominate it): beta then
    # means the same for every crop.
    data = np.clip(smooth, -1000, 1500)
    if data.std() < 1e-3:  # no contrast at all: the walk has no preference
        return np.full(smooth.shape, 0.5)
    data = (data - data.mean()) / data.std()
    with warnings.catch_warnings():
        # Sharp edges push a few probabilities a hair outside [0, 1]; they are clipped by the caller.
        warnings.simplefilter("ignore", UserWarning)
        return random_walker(data, seeds, beta=_RW_BETA, mode="cg_j", tol=1e-3, return_full_prob=True)[0]


def _swept_prior(
    smooth: np.ndarray, axial: np.ndarray, sagittal: np.ndarray, za: int, xs: int, z_span: Range
) -> np.ndarray:
    """The axial mask swept over the sagittal box's z-range: moved by template tracking, shrunk where
    the sagittal mask is narrower than on the crossing line."""
    shape = smooth.shape
    prior = np.zeros(shape, dtype=np.float32)
    if not axial.any():
        return prior
    shifts = _track(smooth, axial, sagittal, za, xs, z_span)
    reference = _main_run(sagittal[za], (0, shape[1])) or _main_run(axial[:, xs], (0, shape[1]))
    zs = sorted(shifts)
    scale = np.ones(len(zs))
    if reference is not None:
        for i, z in enumerate(zs):
            if (run := _main_run(sagittal[z], (0, shape[1]))) is not None:
                scale[i] = np.clip((run[1] - run[0]) / (reference[1] - reference[0]), *_SCALE_RANGE)
        scale = ndimage.gaussian_filter1d(scale, 1.0, mode="nearest")
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]].astype(np.float32)
    cy, cx = (float(c.mean()) for c in np.nonzero(axial))
    template = axial.astype(np.float32)
    for z, s in zip(zs, scale):
        dy, dx = shifts[z]
        coords = [cy + (yy - cy - dy) / s, cx + (xx - cx - dx) / s]
        prior[z] = ndimage.map_coordinates(template, coords, order=1, mode="constant")
    return prior


def _track(
    smooth: np.ndarray, axial: np.ndarray, sagittal: np.ndarray, za: int, xs: int, z_span: Range
) -> dict[int, tuple[int, int]]:
    """Cumulative in-plane shift of the axial mask on each slice of ``z_span``, slice by slice from ``za``.

    Each step moves by at most one voxel, to where the surroundings best match (normalised
    cross-correlation with a template half the prompt slice, half the previous slice) and the shifted
    mask best agrees with the sagittal mask on the crossing line.
    """
    window = ndimage.binary_dilation(axial, iterations=_TRACK_MARGIN)
    padded = np.pad(smooth, ((0, 0), (1, 1), (1, 1)))  # a one-voxel move never leaves it
    shifts = {za: (0, 0)}
    for step in (1, -1):
        cy = cx = 0
        template = smooth[za]
        z = za + step
        while z_span[0] <= z < z_span[1]:
            yy, xx = np.nonzero(_shift(window, cy, cx))
            if yy.size < 2:  # tracked out of the crop: stay put
                shifts[z] = (cy, cx)
                z += step
                continue
            reference = template[yy, xx] - template[yy, xx].mean()
            candidates = padded[z][yy + 1 + _TRACK_MOVES[:, :1], xx + 1 + _TRACK_MOVES[:, 1:]]
            candidates = candidates - candidates.mean(axis=1, keepdims=True)
            norm = np.sqrt((reference**2).sum() * (candidates**2).sum(axis=1)) + 1e-6
            # A small cost per voxel moved keeps the mask still where the match is flat.
            score = candidates @ reference / norm - 0.02 * np.abs(_TRACK_MOVES).sum(axis=1)
            if sagittal[z].any():
                score -= _TRACK_S_WEIGHT * _line_disagreement(axial, sagittal[z], xs, cy, cx)
            dy, dx = _TRACK_MOVES[int(np.argmax(score))]
            cy, cx = cy + int(dy), cx + int(dx)
            shifts[z] = (cy, cx)
            template = 0.5 * _shift(smooth[za], cy, cx) + 0.5 * smooth[z]
            z += step
    return shifts


def _line_disagreement(axial: np.ndarray, line: np.ndarray, xs: int, cy: int, cx: int) -> np.ndarray:
    """For each move of ``_TRACK_MOVES`` on top of (cy, cx): the voxels where the moved axial mask's
    crossing line differs from ``line``, over the voxels of ``line``."""
    out = np.empty(len(_TRACK_MOVES))
    for k, (dy, dx) in enumerate(_TRACK_MOVES):
        column = xs - cx - int(dx)
        moved = np.zeros_like(line)
        if 0 <= column < axial.shape[1]:
            moved = _shift(axial[:, column : column + 1], cy + int(dy), 0)[:, 0]
        out[k] = np.count_nonzero(moved ^ line) / np.count_nonzero(line)
    return out


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved by (dy, dx) voxels, zero-filled."""
    out = np.zeros_like(image)
    h, w = image.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    target = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    out[target] = image[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out
