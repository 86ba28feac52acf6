"""Synthetic abdominal CT phantoms with the 15 AMOS organs, written as an ipnp dataset.

Organs are stylised solids (ellipsoids and tubes) laid out in millimetres in the patient frame (LPS:
+x patient's left, +y posterior, +z superior; origin on the midline, mid-volume). Each case varies
the body size, every solid's size, position and orientation, and then warps the whole frame with a
smooth random displacement. Intensities are HU-like and deliberately overlap between organs (soft
tissue, contrast-enhanced, fluid), so a model has to use shape and context rather than intensity.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ipnp.data.dataset import IMAGES_TR, IMAGES_TS, LABELS_TR, LABELS_TS, write_dataset_json
from ipnp.data.io import Geometry, staged_dir, write_image
from ipnp.data.labels import AMOS_ORGANS
from ipnp.errors import IpnpError

DEFAULT_SHAPE = (64, 96, 96)
_DEFAULT_SPACING_Z = 5.0
_DEFAULT_SPACING_XY = (3.5, 3.9)  # per-case range, like scanners' varying reconstruction fields of view
_MAX_WARP_MM = 12.0  # the random deformation is clipped to this, so solids' bounding boxes stay valid

# The AMOS organ ids, in id order (names in ipnp.data.labels.AMOS_ORGANS).
(SPLEEN, R_KIDNEY, L_KIDNEY, GALLBLADDER, ESOPHAGUS, LIVER, STOMACH, AORTA, IVC, PANCREAS,
 R_ADRENAL, L_ADRENAL, DUODENUM, BLADDER, PROSTATE) = sorted(AMOS_ORGANS)

# Tissues without an organ label; tissue ids 1-15 are the organs' own parenchyma.
AIR, SUBCUT_FAT, FAT, MUSCLE, BONE, CORTEX, DISC, CSF = 0, 16, 17, 18, 19, 20, 21, 22
LUNG, BLOOD, BOWEL_WALL, FLUID, GAS, STOOL, MEDULLA = 23, 24, 25, 26, 27, 28, 29

# (mean, per-case sd) in HU. Soft tissues, enhanced tissues and fluids each share a range on purpose.
_HU = {
    AIR: (-1000, 0), SUBCUT_FAT: (-105, 8), FAT: (-90, 8), MUSCLE: (50, 6), BONE: (260, 40),
    CORTEX: (650, 60), DISC: (85, 10), CSF: (10, 5), LUNG: (-850, 30), BLOOD: (165, 25),
    BOWEL_WALL: (45, 8), FLUID: (15, 8), GAS: (-950, 20), STOOL: (5, 15), MEDULLA: (120, 20),
    SPLEEN: (55, 8), R_KIDNEY: (175, 20), L_KIDNEY: (175, 20), GALLBLADDER: (10, 6), ESOPHAGUS: (45, 8),
    LIVER: (60, 8), STOMACH: (50, 8), AORTA: (190, 25), IVC: (160, 25), PANCREAS: (45, 8),
    R_ADRENAL: (45, 8), L_ADRENAL: (45, 8), DUODENUM: (45, 8), BLADDER: (8, 6), PROSTATE: (45, 8),
}
_ENHANCED = (BLOOD, MEDULLA, R_KIDNEY, L_KIDNEY, AORTA, IVC)

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z in mm, each shaped like the volume (z, y, x)
Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Frame:
    """Maps nominal anatomy (mm) to one case's: per-axis body scale about the origin, then a shift."""

    scale: np.ndarray
    shift: np.ndarray

    def __call__(self, point) -> np.ndarray:
        return np.asarray(point, float) * self.scale + self.shift


@dataclass(frozen=True)
class Ellipsoid:
    """A rotated ellipsoid whose cross-section narrows linearly along its local x axis (``taper``)."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angles: tuple[float, float, float] = (0.0, 0.0, 0.0)  # degrees about x, y, z
    taper: float = 0.0

    def parts(self) -> tuple["Ellipsoid", ...]:
        return (self,)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        reach = max(self.radii) * (1.0 + abs(self.taper))
        return np.asarray(self.center) - reach, np.asarray(self.center) + reach

    def level(self, coords: Coords) -> np.ndarray:
        """``sqrt`` of the ellipsoid's quadratic form: below 1 inside, about ``1 - d/r`` at depth d."""
        rot = _rotation(self.angles)
        d = [c - c0 for c, c0 in zip(coords, self.center)]
        u = [rot[0, i] * d[0] + rot[1, i] * d[1] + rot[2, i] * d[2] for i in range(3)]
        narrowing = np.maximum(1.0 + self.taper * u[0] / self.radii[0], 0.2)
        rx, ry, rz = self.radii
        return np.sqrt((u[0] / rx) ** 2 + (u[1] / (ry * narrowing)) ** 2 + (u[2] / (rz * narrowing)) ** 2)

    def varied(self, rng: np.random.Generator, frame: Frame, size: float, pos: float, turn: float) -> "Ellipsoid":
        return Ellipsoid(
            tuple(frame(self.center) + rng.normal(0, pos, 3)),
            tuple(np.asarray(self.radii) * rng.normal(1, size) * rng.normal(1, size / 2, 3)),
            tuple(np.asarray(self.angles) + rng.normal(0, turn, 3)),
            self.taper,
        )


@dataclass(frozen=True)
class Capsule:
    """A straight tube segment whose radius changes linearly from ``a`` to ``b``."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = max(self.ra, self.rb)
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def level(self, coords: Coords) -> np.ndarray:
        """Distance to the axis over the local radius."""
        ab = self.b - self.a
        d = [c - a for c, a in zip(coords, self.a)]
        t = np.clip((d[0] * ab[0] + d[1] * ab[1] + d[2] * ab[2]) / float(ab @ ab), 0.0, 1.0)
        dist = np.sqrt((d[0] - t * ab[0]) ** 2 + (d[1] - t * ab[1]) ** 2 + (d[2] - t * ab[2]) ** 2)
        return dist / (self.ra + t * (self.rb - self.ra))


@dataclass(frozen=True)
class Tube:
    """A tube along a polyline, rounded by corner cutting; radii are given per control point."""

    points: tuple[tuple[float, float, float], ...]
    radii: tuple[float, ...]

    def parts(self) -> tuple[Capsule, ...]:
        path = _corner_cut(np.column_stack([np.asarray(self.points, float), self.radii]), rounds=2)
        return tuple(Capsule(p[:3], q[:3], p[3], q[3]) for p, q in zip(path[:-1], path[1:]))

    def varied(self, rng: np.random.Generator, frame: Frame, size: float, pos: float, turn: float) -> "Tube":
        del turn  # a tube's orientation varies through its control points
        points = frame(self.points) + rng.normal(0, pos, 3) + rng.normal(0, pos / 2, (len(self.points), 3))
        return Tube(tuple(map(tuple, points)), tuple(np.asarray(self.radii) * rng.normal(1, size)))


Solid = Ellipsoid | Tube


def _corner_cut(path: np.ndarray, rounds: int) -> np.ndarray:
    """Chaikin's corner cutting: each round replaces every corner by two points, keeping the ends."""
    for _ in range(rounds):
        inner = np.empty((2 * (len(path) - 1), path.shape[1]))
        inner[0::2] = 0.75 * path[:-1] + 0.25 * path[1:]
        inner[1::2] = 0.25 * path[:-1] + 0.75 * path[1:]
        path = np.vstack([path[:1], inner, path[-1:]])
    return path


def _rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Region:
    """Where a solid was painted: its voxel box, its level there, and the voxels that were painted."""

    box: Box
    level: np.ndarray
    mask: np.ndarray


class Canvas:
    """Label and tissue maps painted solid by solid; a later solid wins where solids overlap."""

    def __init__(self, coords: Coords, geometry: Geometry) -> None:
        self.coords = coords
        self.origin = np.asarray(geometry.origin)
        self.spacing = np.asarray(geometry.spacing)
        self.label = np.zeros(coords[0].shape, np.uint8)
        self.tissue = np.zeros(coords[0].shape, np.uint8)

    def box(self, lo: np.ndarray, hi: np.ndarray) -> Box | None:
        """Voxels whose warped position can fall within [lo, hi] mm, or None if there are none."""
        first = np.floor((lo - _MAX_WARP_MM - self.origin) / self.spacing).astype(int)
        last = np.ceil((hi + _MAX_WARP_MM - self.origin) / self.spacing).astype(int) + 1
        size = self.label.shape[::-1]
        first, last = np.clip(first, 0, size), np.clip(last, 0, size)
        if np.any(last <= first):
            return None
        return tuple(slice(int(f), int(l)) for f, l in zip(first[::-1], last[::-1]))

    def _sub(self, box: Box, outer: Box) -> Box:
        return tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer))

    def region(self, solid: Solid) -> tuple[Box, np.ndarray] | None:
        """The level of ``solid`` over its box, evaluating each part only within its own box."""
        parts = solid.parts()
        bounds = [p.bounds() for p in parts]
        outer = self.box(np.min([b[0] for b in bounds], 0), np.max([b[1] for b in bounds], 0))
        if outer is None:
            return None
        level = np.full(self.label[outer].shape, np.inf, np.float32)
        for part, (lo, hi) in zip(parts, bounds):
            if (box := self.box(lo, hi)) is not None:
                sub = self._sub(box, outer)
                level[sub] = np.minimum(level[sub], part.level(tuple(c[box] for c in self.coords)))
        return outer, level

    def paint(
        self,
        solid: Solid,
        tissue: int,
        label: int | None = 0,
        *,
        within: np.ndarray | None = None,
        only: int | None = None,
    ) -> Region | None:
        """Paint ``tissue`` (and ``label``, unless None) inside ``solid``, optionally restricted to the
        voxels of mask ``within`` or to those already labeled ``only``."""
        found = self.region(solid)
        if found is None:
            return None
        box, level = found
        mask = level <= 1.0
        if within is not None:
            mask &= within[box]
        if only is not None:
            mask &= self.label[box] == only
        self.tissue[box][mask] = tissue
        if label is not None:
            self.label[box][mask] = label
        return Region(box, level, mask)

    def tint(self, region: Region | None, where: np.ndarray, tissue: int) -> None:
        """Change the tissue, not the label, of painted voxels of ``region`` where ``where`` holds."""
        if region is not None:
            self.tissue[region.box][region.mask & where] = tissue


def phantom_geometry(rng: np.random.Generator, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> Geometry:
    """Spacing for a realistic field of view at ``shape`` (z, y, x); origin puts the midline at x = 0."""
    xy = rng.uniform(*_DEFAULT_SPACING_XY)
    nz, ny, nx = DEFAULT_SHAPE
    spacing = (xy * nx / shape[2], xy * ny / shape[1], _DEFAULT_SPACING_Z * nz / shape[0])
    origin = tuple(-(n - 1) / 2 * s for n, s in zip(shape[::-1], spacing))
    return Geometry(spacing, origin, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]) -> np.ndarray:
    """Low-frequency noise of unit standard deviation: white noise on a coarse grid, upsampled.

    Smoothing only the coarse grid keeps this cheap whatever ``shape`` is.
    """
    zoom = [n / c for n, c in zip(shape, coarse)]
    field = ndimage.zoom(rng.standard_normal(coarse), zoom, order=1, grid_mode=True, mode="nearest")
    return ((field - field.mean()) / (field.std() + 1e-6)).astype(np.float32)


def warped_coords(
    rng: np.random.Generator, shape: tuple[int, int, int], geometry: Geometry, sd_mm: float = 5.0
) -> Coords:
    """Each voxel's patient-frame position plus a smooth random displacement.

    Evaluating every solid at displaced positions warps image and label identically, with no resampling.
    """
    axes = [o + s * np.arange(n, dtype=np.float32) for o, s, n in zip(geometry.origin, geometry.spacing, shape[::-1])]
    grids = (axes[0][None, None, :], axes[1][None, :, None], axes[2][:, None, None])
    return tuple(
        g + np.clip(sd_mm * smooth_noise(rng, shape, (5, 6, 6)), -_MAX_WARP_MM, _MAX_WARP_MM) for g in grids
    )


def _paint_body(canvas: Canvas, rng: np.random.Generator, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """Skin, subcutaneous fat, muscle wall with ribs, and the fat-filled cavity; returns body and cavity."""
    x, y, z = canvas.coords
    a = 150.0 * frame.scale[0] * (1.0 + 0.08 * np.clip(z / 160.0, -1.0, 1.0))
    b = 110.0 * frame.scale[1]
    r = np.sqrt((x / a) ** 2 + ((y - 5.0) / b) ** 2)
    mean_radius = 0.5 * (a + b)
    fat, wall = rng.uniform(10, 30), rng.uniform(8, 14)
    body = r <= 1.0
    muscle = r <= 1.0 - fat / mean_radius
    cavity = r <= 1.0 - (fat + wall) / mean_radius
    canvas.tissue[body] = SUBCUT_FAT
    canvas.tissue[muscle] = MUSCLE
    canvas.tissue[cavity] = FAT
    # Ribs cross an axial slice obliquely: bands that climb towards the back, absent at the front midline.
    band = np.mod((z - 0.35 * y) / 30.0 + rng.uniform(), 1.0) < 0.3
    ribs = muscle & ~cavity & band & (z > -40.0) & ((np.abs(x) > 40.0) | (y > 0.0))
    canvas.tissue[ribs] = CORTEX
    return body, cavity


def _paint_background(
    canvas: Canvas, rng: np.random.Generator, frame: Frame, body: np.ndarray, cavity: np.ndarray
) -> None:
    """Unlabeled structures that organs are later painted over: lungs, heart, muscles, bowel, vessels."""
    def vary(solid: Solid, size: float = 0.08, pos: float = 4.0, turn: float = 5.0) -> Solid:
        return solid.varied(rng, frame, size, pos, turn)

    for side in (-1, 1):
        canvas.paint(vary(Ellipsoid((85 * side, 40, 190), (60, 60, 90))), LUNG, within=cavity)
        canvas.paint(vary(Ellipsoid((35 * side, 88, 0), (25, 22, 400))), MUSCLE, within=body)
        psoas = Tube(((30 * side, 50, 40), (45 * side, 45, -60), (60 * side, 30, -150)), (8, 20, 22))
        canvas.paint(vary(psoas), MUSCLE, within=body)
    canvas.paint(vary(Ellipsoid((15, -35, 195), (75, 55, 55))), BLOOD, within=cavity)

    x, y, z = canvas.coords
    loops = smooth_noise(rng, canvas.label.shape, tuple(max(2, n // 3) for n in canvas.label.shape))
    small_bowel = cavity & (z > -105.0 * frame.scale[2]) & (z < 35.0 * frame.scale[2]) & (y < 35.0)
    gas = smooth_noise(rng, canvas.label.shape, tuple(max(2, n // 4) for n in canvas.label.shape)) > 1.0
    canvas.tissue[small_bowel & (loops > 0.1)] = BOWEL_WALL
    canvas.tissue[small_bowel & (loops > 0.6)] = FLUID
    canvas.tissue[small_bowel & (loops > 0.6) & gas] = GAS

    colon = canvas.paint(vary(Tube(
        ((-80, 0, -70), (-92, 10, -20), (-92, 5, 20), (-80, -25, 30), (-40, -65, 15), (0, -70, 5), (40, -65, 20),
         (85, -20, 55), (95, 20, 30), (95, 25, -40), (60, 10, -85), (20, 5, -100), (0, 35, -125), (0, 40, -165)),
        (25, 24, 22, 22, 20, 20, 20, 20, 20, 20, 18, 18, 20, 20),
    ), size=0.1, pos=6.0), BOWEL_WALL, within=cavity)
    if colon is not None:
        canvas.tint(colon, colon.level <= 0.8, STOOL)
        canvas.tint(colon, (colon.level <= 0.8) & (gas[colon.box] | (loops[colon.box] < -0.8)), GAS)

    vessels = [
        Tube(((5, 28, -60), (40 * s, 30, -100), (60 * s, 20, -165)), (8, 7, 7)) for s in (-1, 1)
    ] + [
        Tube(((-20, 22, -60), (35 * s, 40, -100), (55 * s, 30, -165)), (9, 8, 8)) for s in (-1, 1)
    ] + [
        Tube(((55, 45, 28), (30, 20, 28), (10, 8, 28), (-22, 20, 28)), (5, 5, 5, 5)),  # left renal vein
        Tube(((-45, 45, 20), (-25, 25, 25)), (6, 6)),  # right renal vein
        Tube(((10, 5, -40), (5, 10, 30), (-10, 12, 50), (-35, 10, 75)), (7, 7, 8, 8)),  # SMV and portal vein
        Tube(((80, 42, 80), (45, 25, 60), (5, 12, 48)), (5, 5, 6)),  # splenic vein
    ]
    for vessel in vessels:
        canvas.paint(vary(vessel, size=0.1), BLOOD, within=cavity)


def _paint_organs(canvas: Canvas, rng: np.random.Generator, frame: Frame, cavity: np.ndarray) -> None:
    """The 15 labeled organs, in a fixed order chosen so that every organ keeps a visible part."""
    def vary(solid: Solid, size: float = 0.08, pos: float = 5.0, turn: float = 6.0) -> Solid:
        return solid.varied(rng, frame, size, pos, turn)

    def organ(solid: Solid, label: int) -> Region | None:
        return canvas.paint(vary(solid), label, label, within=cavity)

    organ(Ellipsoid((-55, -5, 95), (85, 80, 70), (0, 0, 15), taper=-0.45), LIVER)
    for branch in (  # portal and hepatic veins: enhanced vessels inside the liver's label
        Tube(((-35, 10, 75), (-70, 0, 95), (-100, -10, 105)), (6, 5, 4)),
        Tube(((-35, 10, 75), (-20, -25, 95), (0, -40, 105)), (5, 5, 4)),
        Tube(((-28, 30, 125), (-70, 0, 130)), (5, 4)),
        Tube(((-25, 30, 125), (0, -20, 135)), (5, 4)),
    ):
        canvas.paint(vary(branch, pos=3.0), BLOOD, label=None, only=LIVER)
    organ(Ellipsoid((90, 40, 100), (26, 50, 55), (0, 0, -40)), SPLEEN)

    # The stomach holds fluid or food and, the patient lying supine, a gas cap at its front.
    contents = FLUID if rng.uniform() < 0.6 else STOOL
    gas_level = rng.uniform(-70, -35)
    for part, lumen in ((Ellipsoid((55, -25, 90), (40, 35, 55), (15, -20, 10)), 0.85),
                        (Tube(((50, -45, 55), (20, -50, 45), (-5, -40, 48), (-15, -30, 52)), (20, 17, 13, 10)), 0.6)):
        stomach = organ(part, STOMACH)
        if stomach is not None:
            canvas.tint(stomach, stomach.level <= lumen, contents)
            canvas.tint(stomach, (stomach.level <= lumen) & (canvas.coords[1][stomach.box] < gas_level), GAS)

    organ(Ellipsoid((0, -45, -115), (42, 35, 30)), BLADDER)
    organ(Ellipsoid((0, -5, -142), (20, 17, 18)), PROSTATE)

    duodenum = organ(Tube(((-15, -30, 52), (-40, -15, 55), (-52, 5, 40), (-52, 8, 10), (-35, 0, -8), (0, -5, -12),
                           (25, -5, -5), (30, -5, 20)), (11,) * 8), DUODENUM)
    if duodenum is not None:
        canvas.tint(duodenum, duodenum.level <= 0.55, FLUID)

    organ(Tube(((-25, 5, 35), (-5, 0, 48), (30, 10, 58), (70, 28, 68), (85, 38, 75)), (17, 12, 12, 10, 9)), PANCREAS)
    organ(Ellipsoid((-55, -50, 40), (15, 15, 30), (25, 0, 0)), GALLBLADDER)

    for label, side in ((R_KIDNEY, -1), (L_KIDNEY, 1)):
        # The right kidney sits lower, beneath the liver; upper poles lean towards the spine.
        center = (62 * side, 52, 15 if side < 0 else 25)
        kidney = organ(Ellipsoid(center, (25, 22, 50), (0, -12 * side, 25 * side)), label)
        if kidney is not None:
            canvas.tint(kidney, kidney.level <= 0.65, MEDULLA)
            hilum = Ellipsoid((center[0] - 22 * side, center[1] - 8, center[2]), (10, 9, 16))
            canvas.paint(vary(hilum, pos=2.0), FAT, only=label)

    organ(Tube(((-20, 22, -60), (-22, 22, 0), (-25, 25, 40), (-30, 35, 100), (-22, 30, 170)), (11,) * 5), IVC)
    organ(Tube(((5, 28, -60), (8, 26, 0), (13, 29, 70), (18, 33, 120), (25, 38, 170)), (11, 11, 11, 12, 12)), AORTA)
    organ(Tube(((2, 25, 170), (5, 18, 140), (15, 5, 118), (30, -5, 108)), (9, 9, 9, 9)), ESOPHAGUS)
    organ(Ellipsoid((-45, 48, 80), (8, 15, 18), (0, 0, 35)), R_ADRENAL)
    organ(Ellipsoid((42, 44, 84), (8, 15, 18), (0, 0, -35)), L_ADRENAL)


def _paint_bones(canvas: Canvas, rng: np.random.Generator, frame: Frame) -> None:
    """Spine and iliac wings, painted last: bone overrides any organ it touches."""
    def vary(solid: Solid) -> Solid:
        return solid.varied(rng, frame, 0.04, 2.0, 3.0)

    axis = np.array([(0, 55, 220), (0, 55, -60), (0, 70, -120), (0, 95, -200)], float)
    spine = canvas.paint(vary(Tube(tuple(map(tuple, axis)), (19, 19, 20, 20))), BONE)
    if spine is not None:
        canvas.tint(spine, spine.level > 0.8, CORTEX)
        z = canvas.coords[2][spine.box]
        canvas.tint(spine, np.mod(z / 33.0 + rng.uniform(), 1.0) < 0.22, DISC)
    arch = axis + (0, 30, 0)
    canvas.paint(vary(Tube(tuple(map(tuple, arch)), (17,) * 4)), CORTEX)
    canvas.paint(vary(Tube(tuple(map(tuple, arch + (0, 22, 0))), (7,) * 4)), CORTEX)
    canvas.paint(vary(Tube(tuple(map(tuple, arch)), (9,) * 4)), CSF)
    for side in (-1, 1):
        wing = canvas.paint(vary(Ellipsoid((95 * side, 45, -135), (10, 55, 45), (0, 0, 35 * side))), CORTEX)
        if wing is not None:
            canvas.tint(wing, wing.level < 0.7, BONE)


def render(tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """HU image of a tissue map: per-case tissue means, smooth texture, partial-volume blur, noise."""
    means = np.zeros(max(_HU) + 1, np.float32)
    for t, (mean, sd) in _HU.items():
        means[t] = mean + rng.normal(0, sd)
    contrast = rng.uniform(0.8, 1.2)
    for t in _ENHANCED:
        means[t] = 40.0 + (means[t] - 40.0) * contrast
    image = means[tissue]
    coarse = tuple(max(2, n // 8) for n in tissue.shape)
    image += rng.uniform(4, 10) * smooth_noise(rng, tissue.shape, coarse) * (tissue != AIR)
    image = ndimage.gaussian_filter(image, sigma=(0.4, 0.6, 0.6))
    image += rng.normal(0, rng.uniform(10, 20), tissue.shape).astype(np.float32)
    return image


def make_phantom(
    seed: int | np.random.Generator, shape: tuple[int, int, int] = DEFAULT_SHAPE
) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """One phantom: float32 HU image and uint8 AMOS label, both (z, y, x), plus their geometry."""
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape {shape}: expected three sizes of at least 8 voxels")
    rng = np.random.default_rng(seed)
    geometry = phantom_geometry(rng, shape)
    canvas = Canvas(warped_coords(rng, shape, geometry), geometry)
    frame = Frame(
        scale=np.array([rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1), rng.uniform(0.95, 1.05)]),
        shift=np.array([rng.normal(0, 4), rng.normal(0, 4), float(np.clip(rng.normal(0, 5), -10, 10))]),
    )
    body, cavity = _paint_body(canvas, rng, frame)
    _paint_background(canvas, rng, frame, body, cavity)
    _paint_organs(canvas, rng, frame, cavity)
    _paint_bones(canvas, rng, frame)
    return render(canvas.tissue, rng), canvas.label, geometry


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of case ``index``: independent of how many cases are made, or in which order."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def synthesize_dataset(
    out: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int,
    overwrite: bool = False,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
) -> Path:
    """Write ``n_train`` training and ``n_test`` test phantoms as a fully labeled dataset at ``out``."""
    if n_train < 1 or n_test < 0:
        raise IpnpError(f"need at least one training case and no negative count (got {n_train} and {n_test})")
    if seed < 0:
        raise IpnpError(f"--seed {seed}: must not be negative")
    with staged_dir(out, overwrite=overwrite) as root:
        for i in tqdm(range(n_train + n_test), desc="synth", unit="case"):
            image, label, geometry = make_phantom(case_rng(seed, i), shape)
            images, labels = (IMAGES_TR, LABELS_TR) if i < n_train else (IMAGES_TS, LABELS_TS)
            hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
            write_image(hu, geometry, root / images / f"phantom_{i:03d}_0000.nii.gz")
            write_image(label, geometry, root / labels / f"phantom_{i:03d}.nii.gz")
        write_dataset_json(
            root,
            AMOS_ORGANS,
            num_training=n_train,
            channel_names={"0": "CT"},
            file_ending=".nii.gz",
            description="Synthetic abdominal CT phantoms with the 15 AMOS organs (ipnp synth)",
            ipnp={"generator": "synth", "seed": seed, "shape": list(shape), "num_test": n_test},
        )
    return Path(out).absolute()
