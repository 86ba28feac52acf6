"""Box prompts from a predicted mask (paper §2.3, Eq. 1).

Axis convention. Arrays are (z, y, x) as SimpleITK returns them, and "axial" and "sagittal" are
anatomical: the axial slice is taken across the array axis whose direction is closest to the patient's
superior-inferior axis, the sagittal slice across the one closest to left-right. With an identity
direction that is axis 0 (axial) and axis 2 (sagittal); :func:`anatomical_axes` works it out from the
image's direction matrix for any orientation.

A box is three half-open ``(lo, hi)`` ranges in array axis order, one of them of size 1 (the slice it
lies on) — exactly nnInteractive's 2D box format when the image is passed in the same axis order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Bounds = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class AnatomicalAxes:
    """Which array axis (of z, y, x) runs superior-inferior (axial slices) and which left-right (sagittal)."""

    axial: int = 0
    sagittal: int = 2


def anatomical_axes(direction: tuple[float, ...]) -> AnatomicalAxes:
    """Array axes of the axial and sagittal slice normals for a SimpleITK direction matrix (row-major 3x3).

    Column k of the matrix is the physical direction (LPS) of ITK index axis k; array axis = 2 - k.
    """
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    itk_axial = int(np.argmax(np.abs(matrix[2])))  # physical z: superior-inferior
    itk_sagittal = int(np.argmax(np.abs(matrix[0])))  # physical x: left-right
    if itk_axial == itk_sagittal:
        raise ValueError(f"direction {direction} is too oblique to tell axial from sagittal")
    return AnatomicalAxes(axial=2 - itk_axial, sagittal=2 - itk_sagittal)


@dataclass(frozen=True)
class BoxPrompt:
    """A 2D box on one slice: half-open bounds per array axis, size 1 on ``plane_axis``."""

    bounds: Bounds

    @property
    def plane_axis(self) -> int:
        return next(a for a, (lo, hi) in enumerate(self.bounds) if hi - lo == 1)

    def as_nninteractive(self) -> list[list[int]]:
        return [[int(lo), int(hi)] for lo, hi in self.bounds]


@dataclass(frozen=True)
class PromptPair:
    """The two orthogonal box prompts for one organ."""

    axial: BoxPrompt
    sagittal: BoxPrompt

    def roi(self, shape: tuple[int, int, int], dilation: int = 3) -> tuple[slice, slice, slice]:
        """The 3D ROI of both boxes (their bounding hull), dilated by ``dilation`` voxels and clipped (Eq. 2)."""
        slices = []
        for axis in range(3):
            bounds = [box.bounds[axis] for box in (self.axial, self.sagittal) if box.plane_axis != axis]
            lo = min(b[0] for b in bounds) - dilation
            hi = max(b[1] for b in bounds) + dilation
            slices.append(slice(max(0, lo), min(shape[axis], hi)))
        return tuple(slices)

    def roi_mask(self, shape: tuple[int, int, int], dilation: int = 3) -> np.ndarray:
        mask = np.zeros(shape, dtype=bool)
        mask[self.roi(shape, dilation)] = True
        return mask


def median_slice(mask: np.ndarray, axis: int) -> int:
    """The median of the indices along ``axis`` whose slices contain foreground (lower median if even)."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    indices = np.flatnonzero(mask.any(axis=other))
    return int(indices[(len(indices) - 1) // 2])


def slice_box(mask: np.ndarray, axis: int, padding: int) -> BoxPrompt:
    """The padded, clipped 2D bounding box of the foreground on the median slice across ``axis``."""
    index = median_slice(mask, axis)
    plane = np.take(mask, index, axis=axis)
    in_plane = [a for a in range(3) if a != axis]
    bounds: list[tuple[int, int]] = [(0, 0)] * 3
    bounds[axis] = (index, index + 1)
    for plane_axis, axis3d in enumerate(in_plane):
        hits = np.flatnonzero(plane.any(axis=1 - plane_axis))
        bounds[axis3d] = (max(0, int(hits[0]) - padding), min(mask.shape[axis3d], int(hits[-1]) + 1 + padding))
    return BoxPrompt(tuple(bounds))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a binary mask (the mask itself when it has at most one)."""
    bounds = ndimage.find_objects(mask.astype(np.uint8))
    if not bounds:
        return mask.astype(bool)
    crop = bounds[0]  # labelling the mask's bounding box only keeps this cheap on a whole CT
    components, _ = ndimage.label(mask[crop])
    out = np.zeros(mask.shape, dtype=bool)
    out[crop] = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    return out


def box_prompts(mask: np.ndarray, padding: int = 6, axes: AnatomicalAxes = AnatomicalAxes()) -> PromptPair | None:
    """The axial and sagittal box prompts of a binary mask, or None if it is empty (the organ is skipped)."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D, got shape {mask.shape}")
    if not mask.any():
        return None
    return PromptPair(axial=slice_box(mask, axes.axial, padding), sagittal=slice_box(mask, axes.sagittal, padding))
