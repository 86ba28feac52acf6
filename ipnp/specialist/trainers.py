"""nnU-Net trainers for partial labels: small subclasses of ``nnUNetTrainer``, one per method.

Each case's organ status (labeled, pseudo-labeled, unknown) comes from ``ipnp_label_status.json`` in the
preprocessed dataset folder (written by :mod:`ipnp.specialist.prepare`); the trainer looks it up through
the batch's case keys before every step. The class names are what nnU-Net's predictor searches for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ipnp.errors import IpnpError
from ipnp.specialist.losses import LABELED, PSEUDO, UNKNOWN, MarginalDiceCELoss, PartialBCEDiceLoss, StatusAwareLoss

STATUS_FILE = "ipnp_label_status.json"

__all__ = [
    "nnUNetTrainer_ipnpFullSup",
    "nnUNetTrainer_ipnpPartialSup",
    "nnUNetTrainer_ipnpMarginal",
    "nnUNetTrainer_ipnpVLS",
    "nnUNetTrainer_ipnpNoVLS",
    "nnUNetTrainer_ipnpVLSFullEvidence",
    "nnUNetTrainer_ipnpNoVLSFullEvidence",
    "STATUS_FILE",
]


def status_table(status_json: dict, num_classes: int) -> dict[str, np.ndarray]:
    """``{case: {"labeled": [...], "pseudo": [...]}}`` -> ``{case: int8 array (num_classes,)}``.

    Organs in neither list are unknown; the background is always labeled.
    """
    table = {}
    for case, entry in status_json.items():
        row = np.full(num_classes, UNKNOWN, np.int8)
        row[[i for i in entry.get("labeled", []) if i < num_classes]] = LABELED
        row[[i for i in entry.get("pseudo", []) if i < num_classes]] = PSEUDO
        row[0] = LABELED
        table[case] = row
    return table


RECIPE_KEY = "ipnp_recipe"


class ScaledPolyLRScheduler(PolyLRScheduler):
    """nnU-Net's poly schedule, each parameter group's rate times that group's ``lr_scale`` (default 1)."""

    def step(self, current_step=None):
        super().step(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class _IpnpTrainer(nnUNetTrainer):
    """nnU-Net's trainer with a progress bar in place of its console output, which goes to its log file.

    A profile may carry a training recipe in its plans configuration (``ipnp_recipe``: optimizer, learning
    rate, mirroring). It changes how the network learns, not what it is, so nnU-Net's predictor, which only
    builds the network from the plans, needs no trainer variant for it.
    """

    @property
    def _recipe(self) -> dict:
        return self.configuration_manager.configuration.get(RECIPE_KEY, {})

    def configure_optimizers(self):
        if self._recipe.get("optimizer", "sgd") == "sgd":
            return super().configure_optimizers()
        self.initial_lr = self._recipe.get("initial_lr", self.initial_lr)
        optimizer = torch.optim.AdamW(self.adamw_parameter_groups(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, ScaledPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def adamw_parameter_groups(self) -> list[dict]:
        """The network's parameters for the AdamW recipe; a group's ``lr_scale`` scales its learning rate."""
        return [{"params": list(self.network.parameters())}]

    def _build_loss(self):
        # nnU-Net gives the lowest-resolution output weight 0 and divides by the sum of the weights. A
        # two-stage network (small images) has only that one output: its weight would be 0/0, every loss NaN.
        with np.errstate(invalid="ignore"):
            loss = super()._build_loss()
        if isinstance(loss, DeepSupervisionWrapper) and len(loss.weight_factors) == 1:
            loss.weight_factors = (1.0,)
        return loss

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self._recipe.get("mirroring", True):
            # Left and right organs are different classes; without mirroring a small network need not
            # learn to tell them apart from context alone, which costs many steps.
            mirror_axes = None
            self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch, mirror_axes

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, renamed into place: a run killed while saving keeps the previous one.

        nnU-Net writes in place, and a checkpoint truncated by a kill cannot be loaded to resume from.
        """
        tmp = Path(filename).with_name(f".{Path(filename).name}.tmp")
        super().save_checkpoint(str(tmp))
        if tmp.is_file():  # nnU-Net writes nothing when checkpointing is disabled
            os.replace(tmp, filename)

    def print_to_log_file(self, *args, also_print_to_console: bool = True, add_timestamp: bool = True) -> None:
        super().print_to_log_file(*args, also_print_to_console=False, add_timestamp=add_timestamp)

    def on_train_start(self) -> None:
        super().on_train_start()
        self._progress = tqdm(
            total=self.num_epochs, initial=self.current_epoch, desc=f"train {self.__class__.__name__.split('_ipnp')[-1]}", unit="epoch"
        )

    def on_epoch_end(self) -> None:
        # nnU-Net trains on, and saves, a network whose weights went NaN; every later epoch and prediction is
        # then garbage. Checked before nnU-Net saves the epoch, so the last checkpoint stays a finite one.
        if not torch.stack([p.isfinite().all() for p in self.network.parameters()]).all():
            raise IpnpError(
                f"{self.output_folder}: training diverged in epoch {self.current_epoch}: the network's weights are "
                "no longer finite (NaN or inf); this epoch was not saved"
            )
        loss = self.logger.get_value("train_losses", step=-1)
        super().on_epoch_end()
        self._progress.set_postfix(loss=f"{loss:.4f}")
        self._progress.update(1)

    def run_training(self) -> None:
        try:
            super().run_training()
        finally:
            # A training that fails ends its progress line, so the error is printed on a line of its own.
            if hasattr(self, "_progress"):
                self._progress.close()


class _StatusAwareTrainer(_IpnpTrainer):
    """Feeds the batch's organ status to a :class:`StatusAwareLoss` before every train and validation step."""

    def _criterion(self) -> StatusAwareLoss:
        raise NotImplementedError

    def _build_loss(self):
        # Reuse nnU-Net's deep-supervision weighting, replacing only the per-output criterion.
        loss = super()._build_loss()
        self._status_loss = self._criterion()
        if isinstance(loss, DeepSupervisionWrapper):
            loss.loss = self._status_loss
            return loss
        return self._status_loss

    @property
    def _status_by_case(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_status_cache"):
            path = Path(self.preprocessed_dataset_folder_base) / STATUS_FILE
            raw = json.loads(path.read_text()) if path.is_file() else {}
            self._status_cache = status_table(raw, len(self.label_manager.all_labels))
        return self._status_cache

    def _set_status(self, keys) -> None:
        num_classes = len(self.label_manager.all_labels)
        everything = np.full(num_classes, LABELED, np.int8)
        rows = [self._status_by_case.get(str(k), everything) for k in keys]
        self._status_loss.status = torch.from_numpy(np.stack(rows))

    def train_step(self, batch: dict) -> dict:
        self._set_status(batch["keys"])
        return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        self._set_status(batch["keys"])
        return super().validation_step(batch)


class nnUNetTrainer_ipnpFullSup(_IpnpTrainer):
    """The paper's "full supervision": stock softmax CE + Dice; unlabeled organs count as background.

    On partial labels this is the lower bound; on full labels, the "full labels" upper bound.
    """


class nnUNetTrainer_ipnpMarginal(_StatusAwareTrainer):
    """IPnP's initial training: marginal CE + Dice, unknown organs merged into the background."""

    def _criterion(self) -> StatusAwareLoss:
        return MarginalDiceCELoss(batch_dice=self.configuration_manager.batch_dice)


class nnUNetTrainer_ipnpVLS(_StatusAwareTrainer):
    """IPnP's retraining: marginal loss over true labels plus pseudo-labels, with voxel-level selection."""

    voxel_selection = True
    pseudo_positive_only = True  # see MarginalDiceCELoss; measured in BENCHMARKS.md

    def _criterion(self) -> StatusAwareLoss:
        return MarginalDiceCELoss(batch_dice=self.configuration_manager.batch_dice, voxel_selection=self.voxel_selection,
                                  pseudo_positive_only=self.pseudo_positive_only)


class nnUNetTrainer_ipnpNoVLS(nnUNetTrainer_ipnpVLS):
    """The paper's ablation: IPnP's retraining with VLS switched off (pseudo-labels count everywhere)."""

    voxel_selection = False


class nnUNetTrainer_ipnpVLSFullEvidence(nnUNetTrainer_ipnpVLS):
    """IPnP's retraining as the paper writes it: a pseudo-labeled organ trains as absent outside its label."""

    pseudo_positive_only = False


class nnUNetTrainer_ipnpNoVLSFullEvidence(nnUNetTrainer_ipnpNoVLS):
    """``ipnp-novls`` with pseudo-labels as full evidence (see ``nnUNetTrainer_ipnpVLSFullEvidence``)."""

    pseudo_positive_only = False


def organs_as_regions(dataset_json: dict) -> dict:
    """Rewrite ``labels`` so that every organ is its own nnU-Net region: one sigmoid output per organ.

    At inference nnU-Net thresholds each sigmoid at 0.5 and paints regions in ``regions_class_order``, so
    where organs overlap the later id wins. nnU-Net counts a label as a region only when its list has more
    than one entry, hence ``[id, id]``.
    """
    labels = dataset_json["labels"]
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        return dataset_json
    organs = sorted((i, n) for n, i in labels.items() if i != 0)
    return {
        **dataset_json,
        "labels": {"background": 0, **{n: [i, i] for i, n in organs}},
        "regions_class_order": [i for i, _ in organs],
    }


class nnUNetTrainer_ipnpPartialSup(_StatusAwareTrainer):
    """The paper's "partial supervision": a sigmoid per organ, BCE + Dice only on a case's labeled organs."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, organs_as_regions(dataset_json), device)

    def _criterion(self) -> StatusAwareLoss:
        return PartialBCEDiceLoss(batch_dice=self.configuration_manager.batch_dice)
