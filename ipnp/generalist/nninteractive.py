"""nnInteractive as IPnP's generalist: a local session, or a remote ``nninteractive-server``.

Both answer an organ's two 2D box prompts the same way: reset the interactions, add the axial box, then
the sagittal box, each as a positive box followed by a prediction (the second refines the first, as a
user clicking in a viewer would), and return the session's target buffer. Boxes and image share the
(z, y, x) array order, so ``BoxPrompt.as_nninteractive()`` goes to the session untransposed.

nnInteractive works in voxel space: the spacing is not used. It returns argmaxed masks only, no
probabilities. The official weights (``nnInteractive_v1.0``) are licensed CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from ipnp.console import stdout_to_log
from ipnp.generalist.base import Generalist, GeneralistError
from ipnp.pseudo.prompts import PromptPair
from ipnp.specialist.nnunet_env import make_trainer_search_safe, resolve_device

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "nnInteractive_v1.0"
FOLD = 0
CHECKPOINT_NAME = "checkpoint_final.pth"
# The loader accepts the current capability file or the older one that early checkpoints ship.
_METADATA_FILES = ("inference_info.json", "inference_session_class.json")

T = TypeVar("T")


def _how_to_get_weights(model_id: str) -> str:
    return (
        f"download them with `nninteractive-download-model {model_id}` (it stores them in "
        f"$NNINTERACTIVE_MODEL_DIR/models/{model_id}, default root ~/.nninteractive) or pass the folder "
        "that holds plans.json; the official weights are licensed CC BY-NC-SA 4.0 (non-commercial use only)"
    )


def default_model_dir(model_id: str = DEFAULT_MODEL_ID) -> Path:
    """Where ``nninteractive-download-model`` puts ``model_id``: ``$NNINTERACTIVE_MODEL_DIR/models/<id>``.

    The variable names nnInteractive's model root (default ``~/.nninteractive``), as in nnInteractive's
    own tools, so a model downloaded with them is found without further setup.
    """
    root = os.environ.get("NNINTERACTIVE_MODEL_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".nninteractive"
    return base / "models" / model_id


def check_model_dir(model_dir: Path, model_id: str = DEFAULT_MODEL_ID) -> None:
    """Raise a one-line GeneralistError if ``model_dir`` lacks a file nnInteractive's loader reads."""
    if not model_dir.is_dir():
        raise GeneralistError(
            f"nnInteractive weights not found: {model_dir} does not exist; {_how_to_get_weights(model_id)}"
        )
    missing = [name for name in ("plans.json", "dataset.json") if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in _METADATA_FILES):
        missing.append(" or ".join(_METADATA_FILES))
    if not (model_dir / f"fold_{FOLD}" / CHECKPOINT_NAME).is_file():
        missing.append(f"fold_{FOLD}/{CHECKPOINT_NAME}")
    if missing:
        raise GeneralistError(
            f"nnInteractive weights in {model_dir} are incomplete (missing {', '.join(missing)}); "
            f"{_how_to_get_weights(model_id)}"
        )


def _segment_round(session: Any, prompts: PromptPair, target: np.ndarray | torch.Tensor) -> np.ndarray:
    """One organ on a session whose image and target buffer are set: both boxes, then a copy of the mask."""
    session.reset_interactions()
    for box in (prompts.axial, prompts.sagittal):
        session.add_bbox_interaction(box.as_nninteractive(), include_interaction=True)
    result = target.numpy() if isinstance(target, torch.Tensor) else target
    return result.astype(bool)  # a copy: the next organ overwrites the buffer in place


class NNInteractiveGeneralist(Generalist):
    """nnInteractive running in this process (``nnInteractiveInferenceSession``).

    ``model_dir`` is the checkpoint folder (``plans.json``, ``dataset.json``, ``fold_0/...``); by default
    the folder where ``nninteractive-download-model`` stores ``model_id``. ``device``: ``auto`` (CUDA if
    available) or a torch device string.
    """

    name = "nninteractive"

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str | None = None,
                 model_id: str = DEFAULT_MODEL_ID) -> None:
        folder = Path(model_dir).expanduser() if model_dir is not None else default_model_dir(model_id)
        check_model_dir(folder, model_id)
        try:
            from nnInteractive.inference.inference_session import nnInteractiveInferenceSession
        except ImportError as exc:
            raise GeneralistError(
                f"nnInteractive is not installed ({exc}); run `pip install 'nninteractive==2.6.*'`"
            ) from exc
        # The loader looks for the checkpoint's trainer class in nnInteractive first and then searches
        # nnU-Net's trainers, which dies on the Primus/torchvision import beside a CPU torch.
        make_trainer_search_safe()
        threads = torch.get_num_threads()
        with stdout_to_log("nnInteractive"):
            # The session sets torch's thread count itself (to min(torch_n_threads, cores)); giving it
            # ipnp's count and restoring that afterwards keeps the choice ipnp made for the whole run.
            self._session = nnInteractiveInferenceSession(
                device=resolve_device(device), use_torch_compile=False, verbose=False, torch_n_threads=threads
            )
            torch.set_num_threads(threads)
            self._session.initialize_from_trained_model_folder(
                str(folder), use_fold=FOLD, checkpoint_name=CHECKPOINT_NAME
            )
        log.info("nnInteractive weights from %s (licence: %s)", folder, self._session.license)
        self._target: torch.Tensor | None = None

    def set_image(self, image: np.ndarray, spacing_zyx: tuple[float, float, float]) -> None:
        """Hand the unnormalised image to the session; it normalises it itself, in the background."""
        if not np.any(image):
            # Checked here: the session would fail in its background thread and fail again when freed.
            raise GeneralistError(
                "nnInteractive cannot use an all-zero image: it normalises with the non-zero region"
            )
        with stdout_to_log("nnInteractive"):
            self._session.set_image(image[None])
            self._target = torch.zeros(image.shape, dtype=torch.uint8)
            self._session.set_target_buffer(self._target)
            # Wait for the background preprocessing, so that its prints are caught here.
            self._session._finish_preprocessing_and_initialize_interactions()

    def segment(self, prompts: PromptPair) -> np.ndarray:
        if self._target is None:
            raise RuntimeError("set_image must be called before segment")
        with stdout_to_log("nnInteractive"):
            return _segment_round(self._session, prompts, self._target)

    def close(self) -> None:
        """Free the network, the image and the session's worker threads."""
        session, self._session, self._target = self._session, None, None
        if session is not None:
            session.executor.shutdown(wait=True)


class NNInteractiveRemoteGeneralist(Generalist):
    """nnInteractive on a running ``nninteractive-server``, through ``nnInteractiveRemoteInferenceSession``.

    A failed request (network error, timeout, server error, expired lease) makes the organ's whole round
    start again after ``backoff_s``, doubling each time, at most ``retries`` times; an expired lease (the
    server restarted or reaped the session) is first replaced by a new session with the image uploaded
    again. ``api_key`` falls back to ``NN_INTERACTIVE_API_KEY``.
    """

    name = "nninteractive-remote"

    def __init__(self, server_url: str, api_key: str | None = None, retries: int = 3, backoff_s: float = 0.5,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0) -> None:
        try:
            import httpx
            from nnInteractive.inference.remote import (
                ServerAtCapacityError,
                SessionExpiredError,
                nnInteractiveRemoteInferenceSession,
            )
        except ImportError as exc:
            raise GeneralistError(
                f"the nnInteractive client is not installed ({exc}); "
                "run `pip install 'nninteractive-client==2.6.*'`"
            ) from exc
        self.server_url = server_url
        self.retries = retries
        self.backoff_s = backoff_s
        self._expired = SessionExpiredError
        self._retryable: tuple[type[Exception], ...] = (
            httpx.HTTPError, SessionExpiredError, ServerAtCapacityError
        )
        self._open_session: Callable[[], Any] = lambda: nnInteractiveRemoteInferenceSession(
            server_url, api_key, connect_timeout=connect_timeout_s, read_timeout=read_timeout_s
        )
        self._image: np.ndarray | None = None
        self._target: np.ndarray | None = None
        try:
            self._session: Any = self._open_session()
        except self._retryable as exc:
            raise GeneralistError(
                f"cannot open a session on the nnInteractive server at {server_url}: {exc}"
            ) from exc
        log.info("nnInteractive server %s (model licence: %s)", server_url, self._session.license)

    @staticmethod
    def _upload(session: Any, image: np.ndarray, target: np.ndarray) -> None:
        session.set_image(image[None])
        session.set_target_buffer(target)

    def _with_retries(self, what: str, action: Callable[[Any], T]) -> T:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                if self._session is None:
                    self._session = self._open_session()
                    if self._image is not None:
                        self._upload(self._session, self._image, self._target)
                return action(self._session)
            except self._retryable as exc:
                failure = exc
                if isinstance(exc, self._expired):
                    self._drop_session()
            if attempt < self.retries:
                log.warning("nnInteractive server %s: %s failed (%s); retrying in %.1f s",
                            self.server_url, what, failure, delay)
                time.sleep(delay)
                delay *= 2
        raise GeneralistError(
            f"nnInteractive server at {self.server_url}: {what} failed after {self.retries + 1} tries: {failure}"
        )

    def set_image(self, image: np.ndarray, spacing_zyx: tuple[float, float, float]) -> None:
        target = np.zeros(image.shape, dtype=np.uint8)
        # Unset while uploading, so that a session reopened during the retries is not sent the image twice.
        self._image = self._target = None
        self._with_retries("uploading the image", lambda session: self._upload(session, image, target))
        self._image, self._target = image, target

    def segment(self, prompts: PromptPair) -> np.ndarray:
        if self._target is None:
            raise RuntimeError("set_image must be called before segment")
        return self._with_retries("segmenting", lambda session: _segment_round(session, prompts, self._target))

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()  # releases the lease; never raises on network errors

    def close(self) -> None:
        """Release the server-side session and the connection."""
        self._image = self._target = None
        self._drop_session()
