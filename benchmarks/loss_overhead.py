"""Forward + backward time of ipnp's status-aware losses against nnU-Net's ``DC_and_CE_loss``, on one batch.

The trainers' step-time ratios (``trainer_overhead.py``) include the network; this isolates the loss. Each
ipnp variant also runs with ``sum_pred_where`` done as a product-and-sum reduction instead of a batched
matrix-vector product (``--reduction``), so one run shows which is faster on the device at hand. Variants
are interleaved round-robin, so machine noise hits them alike; prints ms per call and the ratio to stock.

    python benchmarks/loss_overhead.py --device cpu --shape 2 16 32 48 48
    python benchmarks/loss_overhead.py --device cuda                       # the phantoms' default plan
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch


def _mul_sum(p, weights):
    return torch.stack([(p * weights[:, k:k + 1]).sum(2) for k in range(weights.shape[1])], -1)


@contextmanager
def _sum_pred_where(implementation: Callable | None) -> Iterator[None]:
    from ipnp.specialist import losses

    original = losses.sum_pred_where
    if implementation is not None:
        losses.sum_pred_where = implementation
    try:
        yield
    finally:
        losses.sum_pred_where = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", type=int, nargs=5, default=[2, 16, 64, 96, 96], metavar=("B", "C", "Z", "Y", "X"),
                        help="logits shape (default: the phantoms' 3d_fullres patch and batch, 16 classes)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from ipnp.specialist.losses import LABELED, PSEUDO, UNKNOWN, MarginalDiceCELoss

    device = torch.device(args.device)
    b, c, *spatial = args.shape
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(b, c, *spatial, generator=gen).to(device).requires_grad_(True)
    target = torch.randint(0, c, (b, 1, *spatial), generator=gen).to(device)
    # A 33 % case mix: per sample, a third of the organs labeled, a third pseudo-labeled, a third unknown.
    status = torch.full((b, c), UNKNOWN, dtype=torch.int8)
    status[:, 0] = LABELED
    status[:, 1::3], status[:, 2::3] = LABELED, PSEUDO

    def status_loss(**kwargs) -> MarginalDiceCELoss:
        loss = MarginalDiceCELoss(batch_dice=False, **kwargs)
        loss.status = status
        return loss

    stock = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                           weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    variants: list[tuple[str, Callable, Callable | None]] = [("stock DC_and_CE_loss", stock, None)]
    variants.append(("marginal", status_loss(), None))  # calls no sum_pred_where
    for name, kwargs in (("ipnp-novls", {"pseudo_positive_only": True}),
                         ("ipnp (VLS)", {"pseudo_positive_only": True, "voxel_selection": True})):
        variants.append((f"{name}, bmm", status_loss(**kwargs), None))
        variants.append((f"{name}, mul-sum", status_loss(**kwargs), _mul_sum))
        with _sum_pred_where(_mul_sum):
            reduced = variants[-1][1](logits, target).item()
        # The two reductions must agree, or the timing compares different losses.
        assert abs(variants[-2][1](logits, target).item() - reduced) < 1e-4 * max(1.0, abs(reduced)), name

    def run(loss: Callable, implementation: Callable | None) -> float:
        with _sum_pred_where(implementation):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            value = loss(logits, target)
            value.backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            logits.grad = None
            return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for step in range(args.warmup + args.steps):
        for name, loss, implementation in variants:
            seconds = run(loss, implementation)
            if step >= args.warmup:
                times[name].append(seconds)
    base = sum(times[variants[0][0]]) / args.steps
    print(f"device {device}, logits {tuple(args.shape)}, {args.steps} timed calls after {args.warmup}, interleaved")
    print(f"{'loss':<26} {'ms/call':>9} {'x stock':>8}")
    for name, _, _ in variants:
        mean = sum(times[name]) / args.steps
        print(f"{name:<26} {mean * 1000:9.2f} {mean / base:8.3f}")


if __name__ == "__main__":
    main()
