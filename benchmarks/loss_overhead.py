"""Forward + backward time of ipnp's status-aware losses against nnU-Net's ``DC_and_CE_loss``, on one batch.

The trainers' step-time ratios (``trainer_overhead.py``) include the network; this isolates the loss. Each
ipnp loss runs twice: with its masked sums (``sum_pred_where``, ``sum_classes_where``) as batched matrix
products and as multiply-and-sum reductions (``losses.MATMUL_SUMS``), so one run shows which is faster on the
device at hand; ipnp picks products on the CPU only. Variants are interleaved round-robin, so machine noise
hits them alike; prints ms per call and the ratio to stock.

    python benchmarks/loss_overhead.py --device cpu --shape 2 16 32 48 48
    python benchmarks/loss_overhead.py --device cuda                       # the phantoms' default plan
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch


@contextmanager
def _sums_as_matmul(matmul: bool | None) -> Iterator[None]:
    from ipnp.specialist import losses

    original = losses.MATMUL_SUMS
    losses.MATMUL_SUMS = matmul
    try:
        yield
    finally:
        losses.MATMUL_SUMS = original


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
    variants: list[tuple[str, Callable, bool | None]] = [("stock DC_and_CE_loss", stock, None)]
    for name, kwargs in (("marginal", {}), ("ipnp-novls", {"pseudo_positive_only": True}),
                         ("ipnp (VLS)", {"pseudo_positive_only": True, "voxel_selection": True})):
        loss = status_loss(**kwargs)
        variants += [(f"{name}, matmul", loss, True), (f"{name}, mul-sum", loss, False)]
        values = []
        for matmul in (True, False):
            with _sums_as_matmul(matmul):
                values.append(loss(logits, target).item())
        # The two forms must agree, or the timing compares different losses.
        assert abs(values[0] - values[1]) < 1e-4 * max(1.0, abs(values[1])), (name, values)

    def run(loss: Callable, matmul: bool | None) -> float:
        with _sums_as_matmul(matmul):
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
        for name, loss, matmul in variants:
            seconds = run(loss, matmul)
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
