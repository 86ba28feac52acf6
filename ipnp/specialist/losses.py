"""Losses that know which organs each case has labeled.

Every loss takes, besides logits and target, a per-sample *organ status* table ``status`` of shape
(batch, classes): ``UNKNOWN`` (0), ``LABELED`` (1, ground truth) or ``PSEUDO`` (2, pseudo-label).
Column 0 is the background and always counts as labeled. The trainers set it from the batch's case keys
before each step; the losses are plain ``nn.Module`` s so nnU-Net's deep-supervision wrapper can wrap them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

UNKNOWN, LABELED, PSEUDO = 0, 1, 2


class StatusAwareLoss(nn.Module):
    """Base: holds the status table of the current batch, set by the trainer before each step.

    The table stays on the CPU, where decisions about it cost no device synchronisation; a copy moves to
    the logits' device once per step. Subclasses compute in float32 with autocast off: sums over a whole
    patch overflow float16, and tiny merged probabilities underflow it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._status: torch.Tensor | None = None
        self._on_device: dict[torch.device, torch.Tensor] = {}

    @property
    def status(self) -> torch.Tensor | None:
        return self._status

    @status.setter
    def status(self, table: torch.Tensor | None) -> None:
        self._status = None if table is None else table.cpu()
        self._on_device = {}

    def table(self, batch: int, classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The status table on the CPU and on ``device``."""
        if self._status is None:  # no table: everything labeled, i.e. nnU-Net's stock behaviour
            self.status = torch.full((batch, classes), LABELED, dtype=torch.int8)
        if tuple(self._status.shape) != (batch, classes):
            raise ValueError(f"status table has shape {tuple(self._status.shape)}, expected {(batch, classes)}")
        if device not in self._on_device:
            self._on_device[device] = self._status.to(device, non_blocking=True)
        return self._status, self._on_device[device]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits.float(), target)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _dice_from_sums(
    intersect: torch.Tensor, sum_pred: torch.Tensor, sum_gt: torch.Tensor, known: torch.Tensor, batch_dice: bool, smooth: float
) -> torch.Tensor:
    """Negative soft Dice over the (sample, class) pairs that are ``known``, from (b, c) sums.

    As nnU-Net's MemoryEfficientSoftDiceLoss; with ``batch_dice`` the sums run over the samples in which a
    class is known, and a class known in no sample is left out.
    """
    weight = known.to(torch.float32)
    if batch_dice:
        intersect, sum_pred, sum_gt = ((t * weight).sum(0) for t in (intersect, sum_pred, sum_gt))
        weight = (weight.sum(0) > 0).to(torch.float32)
    dc = (2 * intersect + smooth) / (sum_gt + sum_pred + smooth).clamp_min(1e-8)
    return -(dc * weight).sum() / weight.sum().clamp_min(1)


# Which form the two masked sums below take: None picks by device. On the CPU a batched matrix product reads
# ``p`` once and is the faster (1.15x -> 0.97x stock's loss); on a GPU the same product, with a tiny output over
# ~10^6 voxels, is 2-4x slower than multiplying and summing (H200: the VLS loss 4.3x stock's with products,
# 1.9x without; BENCHMARKS.md, "trainer overhead"). benchmarks/loss_overhead.py sets it to time both forms.
MATMUL_SUMS: bool | None = None


def _matmul_sums(p: torch.Tensor) -> bool:
    return p.device.type == "cpu" if MATMUL_SUMS is None else MATMUL_SUMS


def sum_pred_where(p: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per sample and class, the predicted probability summed under each of ``weights`` (b, k, voxels): (b, c, k)."""
    if _matmul_sums(p):
        return torch.bmm(p, weights.transpose(1, 2))
    return torch.stack([(p * w[:, None]).sum(2) for w in weights.unbind(1)], -1)


def sum_classes_where(p: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per sample and voxel, the probabilities of the classes summed with ``weights`` (b, c): (b, 1, voxels)."""
    if _matmul_sums(p):
        return torch.bmm(weights[:, None], p)
    return (p * weights[:, :, None]).sum(1, keepdim=True)


class MarginalDiceCELoss(StatusAwareLoss):
    """Softmax CE + Dice in which each case's unknown organs are merged into the background.

    Shi et al., "Marginal loss and exclusion loss for partially supervised multi-organ segmentation"
    (MedIA 2021): the probabilities of a case's unknown organs are summed into the background before CE, so
    predicting an unknown organ where the mask says 0 costs nothing; Dice runs over the known foreground
    classes only. With every organ labeled this equals nnU-Net's ``DC_and_CE_loss`` (do_bg=False).

    With ``voxel_selection`` (IPnP's VLS, paper Eq. 4), voxels whose target organ is pseudo-labeled in that
    case count only where the network's argmax agrees with the target; all other voxels always count. The
    mask applies to CE and Dice alike.

    With ``pseudo_positive_only``, a pseudo-label says where its organ is, not where it is not: on the
    case's background voxels a pseudo-labeled organ is merged into the background like an unknown one
    (in CE, and its Dice counts predictions only on foreground-target voxels). Without it, the organ's
    voxels that the pseudo-label misses train as background — harmful when pseudo-labels are incomplete
    (BENCHMARKS.md).
    """

    def __init__(self, batch_dice: bool, smooth: float = 1e-5, voxel_selection: bool = False,
                 pseudo_positive_only: bool = False) -> None:
        super().__init__()
        self.batch_dice, self.smooth, self.voxel_selection = batch_dice, smooth, voxel_selection
        self.pseudo_positive_only = pseudo_positive_only

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Everything runs on (b, c, voxels) views, and the Dice sums are gathered and scattered by target
        # index instead of through a one-hot tensor: that keeps this loss about as cheap as nnU-Net's.
        b, c = logits.shape[:2]
        host, status = self.table(b, c, logits.device)
        log_p = F.log_softmax(logits.reshape(b, c, -1), 1)
        p = log_p.exp()
        t = target.reshape(b, 1, -1).long()
        log_p_target = log_p.gather(1, t)

        merged_host, merged = host == UNKNOWN, status == UNKNOWN
        if self.pseudo_positive_only:
            merged_host, merged = merged_host | (host == PSEUDO), merged | (status == PSEUDO)
        if merged_host.any():
            # log(p_bg + sum of unknown p): logaddexp keeps the background's gradient exact even where the
            # unknown organs' probability underflows.
            p_unknown = sum_classes_where(p, merged.to(p.dtype)).clamp_min(1e-38)
            log_p_target = torch.where(t == 0, torch.logaddexp(log_p[:, :1], p_unknown.log()), log_p_target)

        if self.voxel_selection:
            pseudo_voxel = (status == PSEUDO).gather(1, t[:, 0])[:, None]
            # "argmax agrees with the target" as "the target's probability is the largest": the same but for
            # exact ties, and argmax along the class axis is ~50x slower than amax on CPU.
            agrees = log_p_target >= log_p.amax(1, keepdim=True)
            mask = (~pseudo_voxel | agrees).to(p.dtype)
            ce = -(log_p_target * mask).sum() / mask.sum().clamp_min(1)
            p_target = p.gather(1, t) * mask
        else:
            mask = torch.ones_like(log_p_target)
            ce = -log_p_target.mean()
            p_target = p.gather(1, t)
        if self.pseudo_positive_only and (host == PSEUDO).any():
            sums = sum_pred_where(p, torch.cat((mask, mask * (t != 0).to(p.dtype)), 1))
            sum_pred = torch.where(status == PSEUDO, sums[..., 1], sums[..., 0])
        elif self.voxel_selection:
            sum_pred = sum_pred_where(p, mask)[..., 0]
        else:
            sum_pred = p.sum(2)
        intersect = torch.zeros(b, c, device=p.device, dtype=p.dtype).scatter_add(1, t[:, 0], p_target[:, 0])
        sum_gt = torch.zeros(b, c, device=p.device, dtype=p.dtype).scatter_add_(1, t[:, 0], mask[:, 0])
        known = status[:, 1:] != UNKNOWN
        dice = _dice_from_sums(intersect[:, 1:], sum_pred[:, 1:], sum_gt[:, 1:], known, self.batch_dice, self.smooth)
        return ce + dice


class PartialBCEDiceLoss(StatusAwareLoss):
    """The paper's "partial supervision": one sigmoid channel per organ, BCE + Dice on labeled organs only.

    ``logits`` and ``target`` are (b, organs, ...): nnU-Net's region outputs with one region per organ, so
    channel k is organ k + 1 and the status table's background column is dropped.
    """

    def __init__(self, batch_dice: bool, smooth: float = 1e-5) -> None:
        super().__init__()
        self.batch_dice, self.smooth = batch_dice, smooth

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, c = logits.shape[:2]
        known = self.table(b, c + 1, logits.device)[1][:, 1:] != UNKNOWN
        target = target.to(logits.dtype)
        voxels = logits[0, 0].numel()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(tuple(range(2, logits.ndim)))
        bce = (bce * known).sum() / (known.sum() * voxels).clamp_min(1)
        probs = torch.sigmoid(logits)
        axes = tuple(range(2, logits.ndim))
        intersect = (probs * target).sum(axes)
        dice = _dice_from_sums(intersect, probs.sum(axes), target.sum(axes), known, self.batch_dice, self.smooth)
        return bce + dice
