"""Prediction with a trained specialist through nnU-Net's own predictor.

:class:`Specialist` is the whole API: load a run once, then ask for a case's label map and class
probabilities in the raw image geometry, in memory (the pseudo-labeling stage) or written to a folder.
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


class Specialist:
    """A trained specialist, ready to predict.

    >>> specialist = Specialist("runs/marginal")                      # doctest: +SKIP
    >>> labels, probs = specialist.predict(image, geometry)           # doctest: +SKIP

    ``probs`` is float16 (classes, z, y, x) in the image's own geometry. For softmax methods the classes are
    background plus every organ and sum to 1; for ``partial-sup`` they are one sigmoid per organ.
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

    def predict(self, image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
        """Label map (uint8, z, y, x) and probabilities (float16, classes, z, y, x) of one case.

        ``image`` is (channels, z, y, x) as :meth:`ipnp.data.dataset.Case.load_image` returns it.
        """
        if image.ndim != 4:
            raise IpnpError(f"image must be (channels, z, y, x), got shape {image.shape}")
        with stdout_to_log("nnU-Net"):
            labels, probs = self._predictor.predict_single_npy_array(
                image.astype(np.float32, copy=False), {"spacing": list(geometry.spacing_zyx)}, None, None, True
            )
        return labels.astype(np.uint8), probs.astype(np.float16)

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
                        np.savez_compressed(path, probabilities=probs)
        return Path(out)
