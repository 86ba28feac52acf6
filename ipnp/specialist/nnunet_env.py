"""nnU-Net's environment, handled inside ipnp so that users never set ``nnUNet_raw`` by hand.

nnU-Net reads its folders and process counts from environment variables. ipnp points them into the run
folder, registers its trainers through ``nnUNet_extTrainer``, and picks CPU-friendly defaults.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from pathlib import Path

import torch

from ipnp.device import check_device

log = logging.getLogger(__name__)

EXT_TRAINER_DIR = Path(__file__).parent / "nnunet_ext"


def resolve_device(device: str | None = None) -> torch.device:
    """``cuda`` when available unless ``device`` says otherwise."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(check_device(device, "device"))


_PRIMUS_TRAINERS = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"


def make_trainer_search_safe() -> None:
    """Let nnU-Net's trainer search run where its Primus trainers cannot be imported.

    nnU-Net finds a trainer by importing every module under its trainer folder before it looks in
    ``nnUNet_extTrainer``. The Primus module imports timm, which imports torchvision, and the PyPI
    torchvision crashes beside a CPU build of torch ("operator torchvision::nms does not exist"). The
    search would then die before reaching any other trainer. If that import fails, an empty stand-in
    module takes its place, so the search skips Primus (which ipnp does not use) and goes on.
    """
    if _PRIMUS_TRAINERS in sys.modules:
        return
    try:
        importlib.import_module(_PRIMUS_TRAINERS)
    except Exception as exc:  # noqa: BLE001 - any failure means "Primus unavailable here"
        log.debug("nnU-Net's Primus trainers are unavailable (%s); the trainer search skips them", exc)
        sys.modules[_PRIMUS_TRAINERS] = types.ModuleType(_PRIMUS_TRAINERS)


def configure(run_dir: str | os.PathLike, device: torch.device) -> dict[str, Path]:
    """Point nnU-Net's folders into ``run_dir/nnunet`` and set process defaults; return the folders.

    nnU-Net v2.8 reads these variables when it uses them, so this may be called again for another run.
    """
    make_trainer_search_safe()
    base = Path(run_dir).absolute() / "nnunet"
    folders = {name: base / sub for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results"))}
    for name, path in folders.items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)
    ext = os.environ.get("nnUNet_extTrainer", "")
    if str(EXT_TRAINER_DIR) not in ext.split(os.pathsep):
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(p for p in (str(EXT_TRAINER_DIR), ext) if p)
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, min(4, os.cpu_count() or 1))))
    if device.type == "cpu":
        # Data-augmentation workers compete with the network for 2 cores and slow CPU training down.
        os.environ["nnUNet_n_proc_DA"] = "0"
        os.environ.setdefault("nnUNet_compile", "f")
    return folders
