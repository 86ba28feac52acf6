"""How far one AdamW step moves DoDNet's generated head parameters, with and without the controller's lr scale.

A `quick`-sized DoDNet (nnU-Net's PlainConvUNet, 16..128 features, 15 organs) takes three AdamW steps
(lr 0.01, as the CPU profiles) on a random batch, once with one learning rate for every weight and once with
the parameter groups of `nnUNetTrainer_ipnpDoDNet` (the controller's pooled-feature weights at lr / features).
Both start from the same weights. It prints the mean size of the head parameters, the mean step on them, the
step on an ordinary weight (`precls_conv`) and the ratio of the two head steps.

    python benchmarks/dodnet_controller_step.py
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch.nn import functional as F

from ipnp.baselines.dodnet import DoDNet, nnUNetTrainer_ipnpDoDNet
from ipnp.specialist.trainers import ScaledPolyLRScheduler

ORGANS, LR, STEPS = 15, 1e-2, 3


def quick_dodnet() -> DoDNet:
    torch.manual_seed(0)
    unet = PlainConvUNet(1, 4, (16, 32, 64, 128), torch.nn.Conv3d, 3, (1, 2, 2, 2), 1, ORGANS, 1, False,
                         torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
                         {"inplace": True}, deep_supervision=False)
    return DoDNet(unet, ORGANS)


def head_steps(net: DoDNet, groups: list[dict]) -> tuple[float, float, float]:
    """(mean |head parameter| at the start, mean step on head parameters, mean step on precls_conv's weight)."""
    optimizer = torch.optim.AdamW(groups, LR, weight_decay=3e-5)
    ScaledPolyLRScheduler(optimizer, LR, max_steps=20)  # the CPU profiles' rates at the first epoch
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 32, 48, 48, generator=generator)
    target = (torch.rand(2, ORGANS, 32, 48, 48, generator=generator) > 0.9).float()
    with torch.no_grad():
        params = net.head_parameters(net.encoder(x)[-1])
    start = params.abs().mean().item()
    head, conv = [], []
    for _ in range(STEPS):
        weight = net.precls_conv.weight.detach().clone()
        loss = F.binary_cross_entropy_with_logits(net(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            before, params = params, net.head_parameters(net.encoder(x)[-1])
        head.append((params - before).abs().mean().item())
        conv.append((net.precls_conv.weight - weight).abs().mean().item())
    return start, sum(head) / STEPS, sum(conv) / STEPS


def main() -> None:
    torch.set_num_threads(1)
    one_rate = quick_dodnet()
    scaled = quick_dodnet()
    rows = {
        "one learning rate": head_steps(one_rate, [{"params": list(one_rate.parameters())}]),
        "ipnp's groups": head_steps(scaled, nnUNetTrainer_ipnpDoDNet.adamw_parameter_groups(SimpleNamespace(network=scaled))),
    }
    print(f"AdamW lr {LR}, {STEPS} steps, quick-sized DoDNet, {ORGANS} organs")
    print(f"{'groups':<18} {'|head param|':>13} {'head step':>10} {'conv step':>10}")
    for name, (size, head, conv) in rows.items():
        print(f"{name:<18} {size:>13.3f} {head:>10.3f} {conv:>10.4f}")
    (_, one_step, _), (_, scaled_step, _) = rows.values()
    print(f"head step, one learning rate / ipnp's groups: {one_step / scaled_step:.1f}x")


if __name__ == "__main__":
    main()
