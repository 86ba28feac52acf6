"""Train a specialist: validate the dataset, let nnU-Net plan and preprocess it, run one of ipnp's trainers."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ipnp.data.io import read_json, refuse_output_inside, staged_dir, write_json
from ipnp.data.validate import require_valid, require_valid_labels
from ipnp.errors import IpnpError
from ipnp.console import stdout_to_log
from ipnp.specialist import nnunet_env
from ipnp.specialist.prepare import DATASET_NAME, PLANS, prepare
from ipnp.specialist.profiles import get_profile

log = logging.getLogger(__name__)

METHODS = {
    "full-sup": "nnUNetTrainer_ipnpFullSup",
    "partial-sup": "nnUNetTrainer_ipnpPartialSup",
    "marginal": "nnUNetTrainer_ipnpMarginal",
    "ipnp": "nnUNetTrainer_ipnpVLS",
    "ipnp-novls": "nnUNetTrainer_ipnpNoVLS",
    "dodnet": "nnUNetTrainer_ipnpDoDNet",
}
# The IPnP trainers with pseudo-labels as full evidence (``pseudo_positive_only=False``).
FULL_EVIDENCE = {"ipnp": "nnUNetTrainer_ipnpVLSFullEvidence", "ipnp-novls": "nnUNetTrainer_ipnpNoVLSFullEvidence"}
SPECIALIST_JSON = "specialist.json"
SHARED_JSON = "shared_from.json"  # in a model folder that started as a copy of a shared one
FOLD = "all"  # every training case trains; all of them need pseudo-labels later


def read_pseudo_manifest(labels_dir: Path | None) -> dict[str, list[int]] | None:
    """``pseudo_labels.json`` beside overriding labels: ``{case: [organ ids that carry a pseudo-label]}``."""
    if labels_dir is None or not (Path(labels_dir) / "pseudo_labels.json").is_file():
        return None
    raw = read_json(Path(labels_dir) / "pseudo_labels.json")
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise IpnpError(f"{labels_dir}/pseudo_labels.json: expected {{case: [organ ids]}}")
    return raw


def train_specialist(
    dataset: str | os.PathLike,
    run_dir: str | os.PathLike,
    method: str = "marginal",
    profile: str = "tiny",
    *,
    labels_dir: str | os.PathLike | None = None,
    epochs: int | None = None,
    iterations: int | None = None,
    device: str | None = None,
    resume: bool = False,
    until_epoch: int | None = None,
    init_checkpoint: str | os.PathLike | None = None,
    seed: int | None = None,
    pseudo_positive_only: bool = True,
    shared: str | os.PathLike | None = None,
) -> Path:
    """Train one specialist into ``run_dir`` and return the nnU-Net model folder.

    ``labels_dir`` replaces ``labelsTr`` (the loop passes merged pseudo-labels this way); a
    ``pseudo_labels.json`` in it marks which organs of each case are pseudo-labels.

    The IPnP loop trains one schedule of ``epochs`` in segments: ``until_epoch`` stops this call there,
    and ``init_checkpoint`` (the previous segment's final checkpoint, possibly of another method) is where
    it continues from, with its weights, optimizer state and epoch, so the learning rate keeps following
    one schedule over all ``epochs``.

    ``seed`` seeds the weight initialisation, patch sampling and augmentation (Python, NumPy and torch
    generators), so that two CPU trainings with the same seed are identical; on CUDA, cuDNN's
    nondeterministic kernels still differ slightly. ``None`` leaves nnU-Net unseeded, as it is by default.

    ``pseudo_positive_only=False`` trains ``ipnp`` and ``ipnp-novls`` with pseudo-labels as full evidence
    (``FULL_EVIDENCE``); other methods read no pseudo-labels and ignore it.

    ``shared`` is a model folder that several runs with the same data and settings share up to ``until_epoch``
    (a benchmark's IPnP columns and ``marginal`` all start with the same marginal-loss training): a run that
    has no model folder yet starts from a copy of it, and the first run to train that far fills it.
    """
    if method not in METHODS:
        raise IpnpError(f"--method {method}: unknown; choose one of {', '.join(METHODS)}")
    prof = get_profile(profile)
    for name, value in (("--epochs", epochs), ("--iterations", iterations)):
        if value is not None and value < 1:
            raise IpnpError(f"{name} {value}: must be at least 1")
    run_dir = Path(run_dir)
    record_path = run_dir / SPECIALIST_JSON
    if record_path.is_file() and not resume:
        raise IpnpError(f"{run_dir}: already holds a trained specialist; pass --resume or choose another folder")
    ds = require_valid(dataset)
    refuse_output_inside(run_dir, ds.root)
    if labels_dir is not None:
        require_valid_labels(ds, labels_dir)
    torch_device = nnunet_env.resolve_device(device)
    try:
        folders = nnunet_env.configure(run_dir, torch_device)
    except OSError as exc:
        raise IpnpError(f"{run_dir}: cannot write the run folder ({exc.strerror or exc})") from exc

    total = epochs or prof.epochs
    stop = min(until_epoch or total, total)
    trainer_name = METHODS[method] if pseudo_positive_only else FULL_EVIDENCE.get(method, METHODS[method])
    model_dir = folders["nnUNet_results"] / DATASET_NAME / f"{trainer_name}__{PLANS}__{prof.configuration}"
    record = {
        "method": method,
        "trainer": trainer_name,
        "profile": prof.name,
        "configuration": prof.configuration,
        "epochs": total,
        "iterations_per_epoch": iterations or prof.iterations_per_epoch,
        "fold": FOLD,
        "model_dir": str(model_dir.relative_to(run_dir.absolute())),
        "labels": str(Path(labels_dir).absolute()) if labels_dir else None,
        "dataset": str(ds.root.absolute()),
        "device": str(torch_device),
        "seed": seed,
    }
    if shared is not None:
        _adopt_shared(Path(shared), model_dir, stop)
    # Checked before preprocessing, so that resuming a finished run costs nothing.
    if checkpoint_epoch(model_dir / f"fold_{FOLD}" / "checkpoint_final.pth") >= stop:
        log.info("%s: training up to epoch %d already finished", run_dir, stop)
        if shared is not None:
            _fill_shared(model_dir, Path(shared), stop)
        write_json(record, record_path)
        return model_dir

    import torch

    if torch_device.type == "cpu":
        # Measured on 2-core machines: one thread is as fast when idle and 3-10x faster when anything else runs.
        torch.set_num_threads(int(os.environ.get("IPNP_CPU_THREADS", "1")))
    prepared = prepare(
        ds, folders, prof, labels_dir=Path(labels_dir) if labels_dir else None, pseudo=read_pseudo_manifest(labels_dir),
        num_processes=int(os.environ["nnUNet_def_n_proc"]),
        plans_of=Path(init_checkpoint).parents[1] if init_checkpoint is not None else None,
    )
    with stdout_to_log("nnU-Net"):
        trainer = _build_trainer(trainer_name, prepared.preprocessed, prepared.configuration, torch_device, resume)
    if Path(trainer.output_folder_base) != model_dir.absolute():
        raise RuntimeError(f"nnU-Net's model folder {trainer.output_folder_base} is not the expected {model_dir}")
    trainer.num_epochs = total
    trainer.num_iterations_per_epoch = record["iterations_per_epoch"]
    trainer.num_val_iterations_per_epoch = prof.val_iterations
    trainer.save_every = 1  # a killed run loses at most one epoch
    latest, final = (Path(trainer.output_folder) / f"checkpoint_{n}.pth" for n in ("latest", "final"))
    start = next((c for c in (latest, final) if resume and c.is_file()), init_checkpoint)
    if seed is not None and start is None:
        seed_generators(seed, 0)  # the initial weights are drawn in initialize()
    # The learning-rate schedule is built here, over all epochs, before the stop epoch is set.
    if start is not None:
        trainer.load_checkpoint(str(start))
    else:
        trainer.initialize()
    if seed is not None:
        seed_generators(seed, trainer.current_epoch)  # patches and augmentation, from the epoch training starts at
    trainer.num_epochs = stop
    trainer.run_training()
    if shared is not None:
        _fill_shared(model_dir, Path(shared), stop)
    write_json(record, record_path)
    return model_dir


def _adopt_shared(shared: Path, model_dir: Path, stop: int) -> None:
    """Start ``model_dir`` as a copy of ``shared`` if it does not exist and ``shared`` has trained to ``stop``."""
    if model_dir.exists():
        return
    checkpoint = _load_checkpoint(shared / f"fold_{FOLD}" / "checkpoint_final.pth")
    if checkpoint is None or checkpoint["current_epoch"] != stop:
        return
    log.info("%s: its first %d epochs are %s's, shared", model_dir, stop, shared)
    seconds = _epoch_seconds(checkpoint)
    with staged_dir(model_dir) as staging:
        shutil.copytree(shared, staging, dirs_exist_ok=True)
        write_json({"shared": str(shared.absolute()), "epochs": stop, "seconds": round(seconds, 1)},
                   staging / SHARED_JSON)


def _fill_shared(model_dir: Path, shared: Path, stop: int) -> None:
    """Copy ``model_dir`` to ``shared`` if nothing is there yet and it has trained exactly to ``stop``."""
    if shared.exists() or checkpoint_epoch(model_dir / f"fold_{FOLD}" / "checkpoint_final.pth") != stop:
        return
    with staged_dir(shared) as staging:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(SHARED_JSON))


def seed_generators(seed: int, epoch: int) -> None:
    """Seed Python's, NumPy's and torch's global generators from ``seed`` and the epoch training starts at.

    nnU-Net draws its initial weights, patches and augmentations from these global generators (its data
    augmentation runs in this process on CPU, ``nnUNet_n_proc_DA=0``). Mixing in the epoch gives each
    segment of a schedule its own stream instead of replaying the first segment's.
    """
    import random

    import numpy as np
    import torch

    state = np.random.SeedSequence([seed, epoch]).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[0]))
    torch.manual_seed(int(state[1]))


def checkpoint_epoch(path: Path) -> int:
    """The number of epochs a saved nnU-Net checkpoint has trained (0 when there is none)."""
    checkpoint = _load_checkpoint(path)
    return 0 if checkpoint is None else int(checkpoint["current_epoch"])


def checkpoint_training_seconds(path: Path) -> float:
    """Seconds a saved nnU-Net checkpoint spent in its epochs, from the timestamps nnU-Net logs per epoch.

    A model that adopted a shared first segment did not spend that time itself; the benchmark reports it from
    here beside the column's own wall time, so that a reader sees what the whole schedule cost.
    """
    return _epoch_seconds(_load_checkpoint(path))


def _load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _epoch_seconds(checkpoint: dict) -> float:
    logged = checkpoint["logging"]
    return float(sum(end - start for start, end in zip(logged["epoch_start_timestamps"], logged["epoch_end_timestamps"])))


def _build_trainer(trainer_name: str, preprocessed: Path, configuration: str, device, resume: bool):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    # Found the way nnU-Net's own predictor will find it: proves the class is reachable by name.
    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
    plans["continue_training"] = resume
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    return trainer_class(plans=plans, configuration=configuration, fold=FOLD, dataset_json=dataset_json, device=device)
