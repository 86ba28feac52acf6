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
    """Base: holds the status table of the current batch, set by the trainer before each step."""

    def __init__(self) -> None:
        super().__init__()
        self.status: torch.Tensor | None = None

    def _status(self, batch: int, classes: int, device: torch.device) -> torch.Tensor:
        if self.status is None:  # no table: everything labeled, i.e. nnU-Net's stock behaviour
            return torch.full((batch, classes), LABELED, dtype=torch.int8, device=device)
        if tuple(self.status.shape) != (batch, classes):
            raise ValueError(f"status table has shape {tuple(self.status.shape)}, expected {(batch, classes)}")
        return self.status.to(device)


def _soft_dice(
    probs: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor | None, known: torch.Tensor, batch_dice: bool, smooth: float
) -> torch.Tensor:
    """Negative soft Dice over (sample, class) pairs that are known, as nnU-Net's MemoryEfficientSoftDiceLoss.

    ``probs`` and ``onehot`` are (b, c, ...); ``mask`` (b, 1, ...) selects voxels; ``known`` (b, c) selects
    the pairs that count. With ``batch_dice`` the sums run over the samples in which a class is known.
    """
    axes = tuple(range(2, probs.ndim))
    if mask is not None:
        probs, onehot = probs * mask, onehot * mask
    intersect = (probs * onehot).sum(axes, dtype=torch.float32)
    sum_pred = probs.sum(axes, dtype=torch.float32)
    sum_gt = onehot.sum(axes, dtype=torch.float32)
    weight = known.to(torch.float32)
    if batch_dice:
        intersect, sum_pred, sum_gt = ((t * weight).sum(0) for t in (intersect, sum_pred, sum_gt))
        weight = (weight.sum(0) > 0).to(torch.float32)
    dc = (2 * intersect + smooth) / (sum_gt + sum_pred + smooth).clamp_min(1e-8)
    return -(dc * weight).sum() / weight.sum().clamp_min(1)


class MarginalDiceCELoss(StatusAwareLoss):
    """Softmax CE + Dice in which each case's unknown organs are merged into the background.

    Shi et al., "Marginal loss and exclusion loss for partially supervised multi-organ segmentation"
    (MedIA 2021): the probabilities of a case's unknown organs are summed into the background before CE, so
    predicting an unknown organ where the mask says 0 costs nothing; Dice runs over the known foreground
    classes only. With every organ labeled this equals nnU-Net's ``DC_and_CE_loss`` (do_bg=False).

    With ``voxel_selection`` (IPnP's VLS, paper Eq. 4), voxels whose target organ is pseudo-labeled in that
    case count only where the network's argmax agrees with the target; all other voxels always count. The
    mask applies to CE and Dice alike.
    """

    def __init__(self, batch_dice: bool, smooth: float = 1e-5, voxel_selection: bool = False) -> None:
        super().__init__()
        self.batch_dice, self.smooth, self.voxel_selection = batch_dice, smooth, voxel_selection

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        b, c = logits.shape[:2]
        spatial = (1,) * (logits.ndim - 2)
        status = self._status(b, c, logits.device)
        t = target[:, 0].long()

        log_p = F.log_softmax(logits, 1)
        merged = status == UNKNOWN
        merged[:, 0] = True
        log_bg = torch.logsumexp(log_p.masked_fill(~merged.view(b, c, *spatial), float("-inf")), 1)
        log_p_target = torch.where(t == 0, log_bg, log_p.gather(1, t[:, None])[:, 0])

        mask = None
        if self.voxel_selection:
            pseudo_voxel = (status == PSEUDO).gather(1, t.flatten(1)).view_as(t)
            mask = ~pseudo_voxel | (logits.argmax(1) == t)
        ce = -log_p_target.mean() if mask is None else -(log_p_target * mask).sum() / mask.sum().clamp_min(1)

        onehot = torch.zeros_like(log_p).scatter_(1, t[:, None], 1)[:, 1:]
        dice = _soft_dice(
            log_p.exp()[:, 1:],
            onehot,
            None if mask is None else mask[:, None].to(log_p.dtype),
            status[:, 1:] != UNKNOWN,
            self.batch_dice,
            self.smooth,
        )
        return ce + dice


class PartialBCEDiceLoss(StatusAwareLoss):
    """The paper's "partial supervision": one sigmoid channel per organ, BCE + Dice on labeled organs only.

    ``logits`` and ``target`` are (b, organs, ...): nnU-Net's region outputs with one region per organ, so
    channel k is organ k + 1 and the status table's background column is dropped.
    """

    def __init__(self, batch_dice: bool, smooth: float = 1e-5) -> None:
        super().__init__()
        self.batch_dice, self.smooth = batch_dice, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        b, c = logits.shape[:2]
        known = self._status(b, c + 1, logits.device)[:, 1:] != UNKNOWN
        target = target.to(logits.dtype)
        voxels = logits[0, 0].numel()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(tuple(range(2, logits.ndim)))
        bce = (bce * known).sum() / (known.sum() * voxels).clamp_min(1)
        dice = _soft_dice(torch.sigmoid(logits), target, None, known, self.batch_dice, self.smooth)
        return bce + dice
