"""Image and JSON I/O with atomic writes.

Every file ipnp writes goes first to a temporary file beside its destination and is then renamed into
place, so an interrupted run never leaves a half-written file under a real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ipnp.errors import IpnpError

_TMP_DIR = ".ipnp-tmp"


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a volume, in SimpleITK's (x, y, z) order and LPS convention."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    @classmethod
    def from_spacing(cls, spacing_xyz: tuple[float, float, float]) -> "Geometry":
        return cls(tuple(float(s) for s in spacing_xyz), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in the axis order of the numpy arrays ipnp works with (z, y, x)."""
        return tuple(reversed(self.spacing))

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def mismatch(self, other: "Geometry", tol: float = 1e-3) -> str | None:
        """Describe how ``other`` differs from this geometry, or return None if they agree."""
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if a.shape != b.shape or not np.allclose(a, b, atol=tol, rtol=tol):
                return f"{name} {_fmt(b)} differs from {_fmt(a)}"
        return None


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in np.ravel(values)) + ")"


def read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], Geometry, int]:
    """Read shape (z, y, x), geometry and number of components without loading the voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise IpnpError(f"{path}: cannot read image header ({_first_line(exc)})") from exc
    size = reader.GetSize()
    geometry = Geometry(tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection()))
    return tuple(reversed(size)), geometry, reader.GetNumberOfComponents()


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a volume as a (z, y, x) numpy array plus its geometry."""
    path = Path(path)
    if not path.is_file():
        raise IpnpError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise IpnpError(f"{path}: cannot read image ({_first_line(exc)})") from exc
    if image.GetDimension() != 3:
        raise IpnpError(f"{path}: expected a 3D image, found {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise IpnpError(f"{path}: expected one channel per file, found {image.GetNumberOfComponentsPerPixel()}")
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def read_voxels(path: str | os.PathLike) -> np.ndarray:
    """The stored voxel values of an image, for content checks only (axis order is unspecified).

    NIfTI files are read with nibabel, which rejects truncated files and keeps NaN and infinity;
    SimpleITK silently zero-fills a truncated ``.nii.gz`` and maps NaN and infinity to 0, so it would
    hide exactly the defects a check looks for.
    """
    path = Path(path)
    if not path.is_file():
        raise IpnpError(f"{path}: file not found")
    if not path.name.endswith((".nii", ".nii.gz")):
        return read_image(path)[0]
    try:
        image = nib.load(str(path))
        return np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files; all mean "unreadable"
        raise IpnpError(f"{path}: cannot read image ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK's messages start with the source location; the useful description is the last line.
    return lines[-1] if lines else type(exc).__name__


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed onto ``dest``.

    The temporary file keeps ``dest``'s suffixes (writers choose the format from them) and lives in a
    hidden folder beside ``dest``, so nnU-Net's file listings never see it.
    """
    dest = Path(dest)
    tmp_dir = dest.parent / _TMP_DIR
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{uuid.uuid4().hex}_{dest.name}"
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            tmp_dir.rmdir()


def write_image(array: np.ndarray, geometry: Geometry, dest: str | os.PathLike) -> None:
    """Write a (z, y, x) array atomically with the given geometry (format from the file name)."""
    image = geometry.apply(sitk.GetImageFromArray(np.ascontiguousarray(array)))
    with atomic_path(dest) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
        try:  # SimpleITK's NIfTI writer reports a short write (a full disk) on stderr and returns normally
            read_voxels(tmp)
        except IpnpError:
            raise IpnpError(f"{dest}: could not be written completely (is the disk full?)") from None


def write_json(data: Any, dest: str | os.PathLike) -> None:
    """Write JSON atomically, indented for people to read."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise IpnpError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IpnpError(f"{path}: not valid JSON ({exc})") from exc


def copy_file(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a file atomically; the source is only read."""
    with atomic_path(dest) as tmp, open(src, "rb") as fsrc, open(tmp, "wb") as fdst:
        while chunk := fsrc.read(1 << 20):
            fdst.write(chunk)


def refuse_output_inside(out: str | os.PathLike, *inputs: str | os.PathLike) -> None:
    """Inputs are only read: an output folder that is an input or lies inside one is one clear error.

    Paths are resolved, so a symbolic link to an input counts as that input.
    """
    out = Path(out).resolve()
    for src in inputs:
        src = Path(src).resolve()
        if out == src or src in out.parents:
            raise IpnpError(f"{out}: output must not be an input folder or lie inside one ({src})")


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, *, overwrite: bool = False, inputs: tuple = ()) -> Iterator[Path]:
    """Build an output folder under a temporary name and rename it onto ``out`` when complete.

    ``out`` therefore either does not exist or holds a finished result, whatever interrupts the build.
    ``inputs`` are folders that must not be written to: ``out`` may not be one of them or lie inside one.
    """
    out = Path(out).absolute()
    refuse_output_inside(out, *inputs)
    if out.exists() and not overwrite:
        raise IpnpError(f"{out}: already exists; choose another folder or pass --overwrite")
    staging = out.with_name(f".{out.name}.ipnp-incomplete")
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    except OSError as exc:
        raise IpnpError(f"{out}: cannot create output folder ({exc.strerror or exc})") from exc
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def ensure_dir(folder: str | os.PathLike) -> Path:
    """Create an output folder (and parents), or raise one clear error saying why it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IpnpError(f"{folder}: cannot create output folder ({exc.strerror or exc})") from exc
    return folder


def write_csv(header: list[str], rows: list[list[object]], dest: str | os.PathLike) -> None:
    """Write a CSV table atomically."""
    import csv

    with atomic_path(dest) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
