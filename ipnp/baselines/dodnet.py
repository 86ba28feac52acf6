"""A DoDNet-style baseline: nnU-Net's planned U-Net with DoDNet's task-conditioned dynamic head.

Zhang et al., "DoDNet: Learning to segment multi-organ and tumors from multiple partially labeled datasets",
CVPR 2021. A controller maps the task's one-hot code, concatenated with the globally pooled bottleneck
features, to the weights and biases of a small per-sample head of three 1x1x1 convolutions (8, 8, 1
channels) that segments that task from the decoder's last features. Here a task is an organ; the head runs
for every organ, so the network's output is nnU-Net's region output (one sigmoid per organ) and nnU-Net's
predictor needs nothing else. See docs/baselines.md for how this differs from the original.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from ipnp.specialist.trainers import nnUNetTrainer_ipnpPartialSup

__all__ = ["DoDNet", "nnUNetTrainer_ipnpDoDNet"]

HEAD_CHANNELS = 8


class DoDNet(nn.Module):
    """A U-Net (nnU-Net's ``encoder`` and ``decoder``) whose segmentation layer is DoDNet's dynamic head.

    ``forward`` returns (batch, organs, *spatial) logits: channel k is the head generated from organ k's code.
    """

    def __init__(self, unet: nn.Module, num_organs: int, head_channels: int = HEAD_CHANNELS) -> None:
        super().__init__()
        self.encoder, self.decoder = unet.encoder, unet.decoder
        # Identities in place of the segmentation layers make the decoder return its last features, and
        # keep its parameter names those of nnU-Net's U-Net.
        self.decoder.seg_layers = nn.ModuleList(nn.Identity() for _ in self.decoder.seg_layers)
        self.decoder.deep_supervision = False
        self.num_organs = num_organs
        # As in DoDNet, a static 1x1x1 convolution brings the decoder's features to the head's width.
        self.precls_conv = self.encoder.conv_op(self.encoder.output_channels[0], head_channels, 1)
        self.head_layers = ((head_channels, head_channels), (head_channels, head_channels), (1, head_channels))
        num_params = sum(out * inp + out for out, inp in self.head_layers)
        # DoDNet's controller is one linear map of [pooled features, organ code]. It is kept as its two
        # parts, the same map, so that a trainer can give the pooled features' weights a learning rate of
        # their own (nnUNetTrainer_ipnpDoDNet.adamw_parameter_groups).
        pooled_width = self.encoder.output_channels[-1]
        self.controller_context = nn.Linear(pooled_width, num_params, bias=False)
        self.controller_code = nn.Linear(num_organs, num_params)
        bound = (pooled_width + num_organs) ** -0.5  # nn.Linear's initialisation of the joint map
        for layer in (self.controller_context, self.controller_code):
            for p in layer.parameters():
                nn.init.uniform_(p, -bound, bound)

    def head_parameters(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """(batch, organs, parameters): the controller's output for every sample and organ code."""
        pooled = bottleneck.flatten(2).mean(2)
        codes = torch.eye(self.num_organs, device=pooled.device, dtype=pooled.dtype)
        return self.controller_context(pooled)[:, None] + self.controller_code(codes)[None]

    def run_head(self, features: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Each (sample, organ)'s dynamic head on that sample's (batch, 8, *spatial) features.

        All organs run at once as batched matrix products over the flattened voxels; the first layer reads
        the same features for every organ, so it is one (organs*8 x 8) product per sample.
        """
        b, t = params.shape[:2]
        n = len(self.head_layers)
        sizes = [out * inp for out, inp in self.head_layers] + [out for out, _ in self.head_layers]
        chunks = params.split(sizes, dim=2)
        weights, biases = chunks[:n], chunks[n:]
        x = features.flatten(2)
        for k, ((out, inp), weight, bias) in enumerate(zip(self.head_layers, weights, biases)):
            groups = b if k == 0 else b * t
            x = torch.baddbmm(bias.reshape(groups, -1, 1), weight.reshape(groups, -1, inp), x)
            if k < n - 1:
                x = x.relu_()  # in place on the product itself, not on a view of it: autograd would copy
            x = x.reshape(b * t, out, -1)
        return x.reshape(b, t, *features.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encoder(x)
        return self.run_head(self.precls_conv(self.decoder(skips)), self.head_parameters(skips[-1]))


class nnUNetTrainer_ipnpDoDNet(nnUNetTrainer_ipnpPartialSup):
    """DoDNet on partial labels: one organ per task, BCE + Dice only on a case's labeled organs.

    The loss, the organ status and the region output (one sigmoid per organ) are partial-sup's; only the
    network differs. DoDNet has no deep supervision, so the trainer trains the full-resolution output alone.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # The dynamic head has a single output, whatever the caller asks for.
        unet = nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision=False
        )
        return DoDNet(unet, num_output_channels)

    def adamw_parameter_groups(self) -> list[dict]:
        # Each generated head parameter sums one weight per pooled feature times that feature, and the
        # features are mostly positive (after LeakyReLU), so an AdamW step of lr on every weight moves it by
        # about lr * sum(pooled): 50 lr for the quick network, twice its initial size at lr 0.01. At
        # lr / features it moves about as far as an ordinary weight does (benchmarks/dodnet_controller_step.py).
        context = self.network.controller_context.weight
        rest = [p for p in self.network.parameters() if p is not context]
        return [{"params": rest}, {"params": [context], "lr_scale": 1 / context.shape[1]}]

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        # nnU-Net switches deep supervision back on after its final validation; the dynamic head has none.
        super().set_deep_supervision_enabled(False)
