"""A tiny random-weight checkpoint folder in nnInteractive 2.6's real on-disk format, for tests.

The folder is what ``nnInteractiveInferenceSession.initialize_from_trained_model_folder`` and
``nninteractive-server --model-dir`` read:

    plans.json                  nnU-Net plans; the configuration's ``architecture`` builds the network
    dataset.json                one image channel (so 1 + 7 interaction channels = 8 network inputs)
    inference_info.json         capability metadata; without other keys the session uses its default
                                interaction set (prev_seg + 6 interaction channels, 2D boxes only)
    fold_0/checkpoint_final.pth network_weights, init_args.configuration, trainer_name

The weights are not trained but set by hand so that the network echoes its positive-box input channel:
it predicts foreground exactly on the voxels of the positive boxes in its patch. A random network would
make nnInteractive zoom out to 4x and refine dozens of patches (about 25 s per box on 2 cores), and its
masks would say nothing; with the echo, a box that fits in the patch is predicted in one forward pass and
the returned mask shows where each box landed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CONFIGURATION = "3d_fullres"
# nnInteractive's refinement planner keeps a 24-voxel margin on each side of the patch, so every axis of
# the patch must exceed 48 voxels.
PATCH_SIZE = (64, 64, 64)
IMAGE_CHANNELS = 1
INTERACTION_CHANNELS = 7  # prev_seg + positive/negative pairs for boxes, points and scribbles
# Network input channel of the positive 2D box: the image channels come first, then nnInteractive's default
# interaction mapping (prev_seg 0, bbox2d (1, 2), points (3, 4), scribble (5, 6)).
POSITIVE_BOX_INPUT = IMAGE_CHANNELS + 1
OUTPUT_CHANNELS = 2  # nnInteractive always predicts target versus background

_ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _plans() -> dict:
    return {
        "dataset_name": "Dataset999_ipnpTinyInteractive",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": list(PATCH_SIZE),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": 0.0, "std": 1.0, "median": 0.0, "min": -1.0, "max": 1.0,
                  "percentile_00_5": -1.0, "percentile_99_5": 1.0}
        },
        "configurations": {
            CONFIGURATION: {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(PATCH_SIZE),
                "median_image_size_in_voxels": list(PATCH_SIZE),
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None
                },
                "architecture": _ARCHITECTURE,
                "batch_dice": True,
            }
        },
    }


def _box_echo_network() -> torch.nn.Module:
    """The network the plans describe, with weights that make it predict the positive-box channel.

    All convolutions are zeroed except two centre taps that carry the box channel through the first
    encoder stage and, via the skip connection, the last decoder stage; the segmentation layer then
    scores it as foreground. Instance norm and leaky ReLU keep its sign (inside the box > 0 > outside),
    so the argmax is foreground exactly inside the box.
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    network = get_network_from_plans(
        _ARCHITECTURE["network_class_name"],
        _ARCHITECTURE["arch_kwargs"],
        _ARCHITECTURE["_kw_requires_import"],
        IMAGE_CHANNELS + INTERACTION_CHANNELS,
        OUTPUT_CHANNELS,
        deep_supervision=False,
    )
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
                module.weight.zero_()
                module.bias.zero_()
        network.encoder.stages[0][0].convs[0].conv.weight[0, POSITIVE_BOX_INPUT, 1, 1, 1] = 1.0
        # The last decoder stage sees [upsampled features (4 channels), skip from encoder stage 0].
        upsampled = _ARCHITECTURE["arch_kwargs"]["features_per_stage"][0]
        network.decoder.stages[-1].convs[0].conv.weight[0, upsampled, 1, 1, 1] = 1.0
        network.decoder.seg_layers[-1].weight[1, 0] = 1.0
    return network


def build_checkpoint(folder: Path, trainer_name: str = "nnInteractiveTrainer_stub") -> Path:
    """Write the checkpoint folder at ``folder`` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(_plans(), indent=2))
    (folder / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "target": 1},
                    "numTraining": 1, "file_ending": ".nii.gz"}, indent=2)
    )
    (folder / "inference_info.json").write_text(json.dumps({"inference_class": "nnInteractiveInferenceSession"}))
    checkpoint = {
        "network_weights": _box_echo_network().state_dict(),
        "init_args": {"configuration": CONFIGURATION, "fold": 0},
        "trainer_name": trainer_name,
    }
    (folder / "fold_0").mkdir(exist_ok=True)
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder
