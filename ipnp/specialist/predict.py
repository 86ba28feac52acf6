"""Prediction with a trained specialist through nnU-Net's own predictor.

:class:`Specialist` is the whole API: load a run once, then ask for a case's label map and class
probabilities in the raw image geometry, in memory (the pseudo-labeling stage) or written to a folder.

Memory. nnU-Net's own export (``predict_single_npy_array`` with probabilities) resamples the logits of
every class to the image's shape and then softmaxes them all at once in float32: several copies of
classes x voxels x 4 bytes, 3.4 GB each for 16 classes on a 512 x 512 x 200 CT. Here the logits are
resampled one class at a time with nnU-Net's own resampling function into one float16 array (classes x
voxels x 2 bytes), the label map is taken from them slab by slab, and probabilities are computed only for
the regions a caller asks for (:class:`CaseProbabilities`), with nnU-Net's own non-linearity and cropping
rules, so they equal nnU-Net's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ipnp.data.io import Geometry, atomic_path, read_image, read_json, staged_dir, write_image
from ipnp.errors import IpnpError
from ipnp.console import stdout_to_log
from ipnp.specialist import nnunet_env
from ipnp.specialist.train import FOLD, SPECIALIST_JSON

log = logging.getLogger(__name__)

# Voxels per step when probabilities or labels are computed. Small enough that the float32 temporaries
# (classes x this x 4 bytes) stay below glibc's mmap threshold and are reused instead of page-faulted anew.
_SLAB_VOXELS = 2**18


def _slab(plane_voxels: int) -> int:
    """Slices per step for slices of ``plane_voxels`` voxels."""
    return max(1, _SLAB_VOXELS // max(1, plane_voxels))


class CaseProbabilities:
    """One case's class probabilities in the raw image geometry, computed region by region when asked.

    Index it like a float16 (classes, z, y, x) array, with an int or ``:`` for the class and plain slices
    for the spatial axes: ``probs[organ, z0:z1, y0:y1, x0:x1]`` or ``probs[(slice(None), *roi)]``. Only the
    region's probabilities are computed. ``np.asarray(probs)`` gives them all (classes x voxels x 2 bytes).
    """

    def __init__(self, logits: np.ndarray, properties: dict, transpose_forward: list[int], label_manager) -> None:
        """``logits``: float16, resampled to the image's spacing, inside nnU-Net's nonzero crop, in its axis order."""
        self._logits = logits
        self._bbox = [[int(v) for v in b] for b in properties["bbox_used_for_cropping"]]
        self._forward = list(transpose_forward)
        self._backward = [int(i) for i in np.argsort(transpose_forward)]
        self._label_manager = label_manager
        shape_t = properties["shape_before_cropping"]
        self.shape = (logits.shape[0], *(int(shape_t[self._backward[a]]) for a in range(3)))
        self.dtype = np.dtype(np.float16)

    def __getitem__(self, key) -> np.ndarray:
        channel, *spatial = key if isinstance(key, tuple) else (key,)
        if len(spatial) > 3:
            raise IndexError(f"too many indices for probabilities of shape {self.shape}")
        region = []
        for index, size in zip([*spatial, *[slice(None)] * (3 - len(spatial))], self.shape[1:]):
            if not isinstance(index, slice) or index.step not in (None, 1):
                raise TypeError(f"spatial indices must be slices without a step, got {index!r}")
            start, stop, _ = index.indices(size)
            region.append((start, max(start, stop)))
        classes = np.empty(self.shape[0])[channel].shape  # () for one class, (n,) for a slice of them
        out = np.empty((*classes, *(hi - lo for lo, hi in region)), dtype=np.float16)
        (z0, z1), (y0, y1), (x0, x1) = region
        step = _slab((y1 - y0) * (x1 - x0))
        for lo in range(z0, z1, step):
            hi = min(lo + step, z1)
            out[..., lo - z0 : hi - z0, :, :] = self._region([(lo, hi), (y0, y1), (x0, x1)])[channel]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = self[:]
        return dense if dtype is None else dense.astype(dtype, copy=False)

    def _region(self, region: list[tuple[int, int]]) -> np.ndarray:
        """float32 probabilities (classes, *region) of a raw-geometry region."""
        region_t = [region[a] for a in self._forward]
        inner = [(max(lo, b0), max(max(lo, b0), min(hi, b1))) for (lo, hi), (b0, b1) in zip(region_t, self._bbox)]
        local = self._logits[(slice(None), *(slice(lo - b0, hi - b0) for (lo, hi), (b0, _) in zip(inner, self._bbox)))]
        probs = self._label_manager.apply_inference_nonlin(local)
        if inner != region_t:  # outside nnU-Net's nonzero crop its label manager decides (softmax: background)
            probs = self._label_manager.revert_cropping_on_probabilities(
                probs, [[lo - r0, hi - r0] for (lo, hi), (r0, _) in zip(inner, region_t)], [hi - lo for lo, hi in region_t]
            )
        return probs.numpy().transpose([0, *(a + 1 for a in self._backward)])

    def labels(self) -> np.ndarray:
        """The label map (z, y, x), as nnU-Net's export makes it from the same logits."""
        from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

        inside = np.empty(self._logits.shape[1:], dtype=np.uint16)
        step = _slab(inside[0].size)
        for lo in range(0, inside.shape[0], step):
            inside[lo : lo + step] = self._label_manager.convert_logits_to_segmentation(self._logits[:, lo : lo + step])
        labels = np.zeros([self.shape[1:][a] for a in self._forward], dtype=np.uint8)
        return insert_crop_into_image(labels, inside, self._bbox).transpose(self._backward)


def resample_logits(logits, properties: dict, plans_manager, configuration_manager) -> np.ndarray:
    """Network-resolution logits (torch, classes first) as float16 at the image's spacing inside nnU-Net's crop.

    The same resampling function and arguments as nnU-Net's export, called one class at a time: in one
    call it would convert all classes to float64 first.
    """
    spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape = [int(s) for s in properties["shape_after_cropping_and_before_resampling"]]
    # A 2D configuration keeps the spacing between slices, as in nnU-Net's export.
    target = configuration_manager.spacing
    current = target if len(target) == len(shape) else [spacing[0], *target]
    if list(logits.shape[1:]) == shape:
        return logits.numpy()
    resampled = np.empty((logits.shape[0], *shape), dtype=np.float16)
    for c in range(logits.shape[0]):
        resampled[c] = configuration_manager.resampling_fn_probabilities(logits[c : c + 1], shape, current, spacing)[0]
    return resampled


class Specialist:
    """A trained specialist, ready to predict.

    >>> specialist = Specialist("runs/marginal")                      # doctest: +SKIP
    >>> labels, probs = specialist.predict(image, geometry)           # doctest: +SKIP
    >>> probs[organ, z0:z1, y0:y1, x0:x1]                             # doctest: +SKIP

    ``probs`` behaves like a float16 (classes, z, y, x) array in the image's own geometry whose regions are
    computed when indexed (:class:`CaseProbabilities`). For softmax methods the classes are background
    plus every organ and sum to 1; for ``partial-sup`` they are one sigmoid per organ.
    """

    def __init__(self, run_dir: str | os.PathLike, device: str | None = None, mirroring: bool | None = None,
                 checkpoint: str = "checkpoint_final.pth") -> None:
        self.run_dir = Path(run_dir)
        record_path = self.run_dir / SPECIALIST_JSON
        if not record_path.is_file():
            raise IpnpError(f"{self.run_dir}: no trained specialist here ({SPECIALIST_JSON} is missing)")
        self.record = read_json(record_path)
        model_dir = self.run_dir.absolute() / self.record["model_dir"]
        if not (model_dir / f"fold_{FOLD}" / checkpoint).is_file():
            raise IpnpError(f"{model_dir}: checkpoint fold_{FOLD}/{checkpoint} is missing; was training finished?")
        self.device = nnunet_env.resolve_device(device)
        nnunet_env.configure(self.run_dir, self.device)
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        if mirroring is None:
            mirroring = self.record["profile"] == "default"  # test-time mirroring costs 4-8x; worth it on GPUs
        with stdout_to_log("nnU-Net"):
            self._predictor = nnUNetPredictor(
                tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring, perform_everything_on_device=self.device.type == "cuda",
                device=self.device, verbose=False, verbose_preprocessing=False, allow_tqdm=False,
            )
            self._predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=(FOLD,), checkpoint_name=checkpoint)

    @property
    def is_softmax(self) -> bool:
        return not self._predictor.label_manager.has_regions

    def predict(self, image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, CaseProbabilities]:
        """Label map (uint8, z, y, x) and probabilities (classes, z, y, x, computed when indexed) of one case.

        ``image`` is (channels, z, y, x) as :meth:`ipnp.data.dataset.Case.load_image` returns it.
        """
        import torch

        if image.ndim != 4:
            raise IpnpError(f"image must be (channels, z, y, x), got shape {image.shape}")
        predictor = self._predictor
        plans, configuration = predictor.plans_manager, predictor.configuration_manager
        with stdout_to_log("nnU-Net"):
            data, _, properties = configuration.preprocessor_class(verbose=False).run_case_npy(
                image, None, {"spacing": list(geometry.spacing_zyx)}, plans, configuration, predictor.dataset_json
            )
            logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        del data  # before the resampling, the prediction's peak
        resampled = resample_logits(logits, properties, plans, configuration)
        probs = CaseProbabilities(resampled, properties, plans.transpose_forward, predictor.label_manager)
        return probs.labels(), probs

    def predict_folder(self, images: str | os.PathLike, out: str | os.PathLike, *, probabilities: bool = False,
                       overwrite: bool = False) -> Path:
        """Predict every ``<case>_0000<ending>`` in ``images`` into ``out/<case><ending>``.

        With ``probabilities``, also ``out/<case>.npz`` holding ``probabilities`` (float16, classes, z, y, x).
        """
        images = Path(images)
        # The model's own dataset.json says how many channels it reads and how files are named.
        file_ending = self._predictor.dataset_json["file_ending"]
        num_channels = len(self._predictor.dataset_json["channel_names"])
        if not images.is_dir():
            raise IpnpError(f"{images}: images folder not found")
        suffix = f"_0000{file_ending}"
        cases = sorted(p.name[: -len(suffix)] for p in images.iterdir() if p.name.endswith(suffix))
        if not cases:
            raise IpnpError(f"{images}: no images named <case>{suffix}")
        with staged_dir(out, overwrite=overwrite, inputs=(images,)) as tmp:
            for case in tqdm(cases, desc="predict", unit="case"):
                channels = [read_image(images / f"{case}_{c:04d}{file_ending}") for c in range(num_channels)]
                geometry = channels[0][1]
                labels, probs = self.predict(np.stack([a for a, _ in channels]), geometry)
                write_image(labels, geometry, tmp / f"{case}{file_ending}")
                if probabilities:
                    with atomic_path(tmp / f"{case}.npz") as path:
                        np.savez_compressed(path, probabilities=np.asarray(probs))
        return Path(out)
