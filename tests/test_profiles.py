"""Profiles as nnU-Net plans variants: what they add to the dataset's own plans."""

import copy

from ipnp.specialist.profiles import PROFILES, add_profile_configuration


def planned(n_stages: int, patch=(64, 96, 96)) -> dict:
    """A ``3d_fullres`` configuration as nnU-Net plans it, with ``n_stages`` stages."""
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    return {"configurations": {"3d_fullres": {
        "patch_size": list(patch), "batch_size": 2,
        "architecture": {"network_class_name": "PlainConvUNet", "arch_kwargs": {
            "n_stages": n_stages, "features_per_stage": [32 * 2 ** i for i in range(n_stages)],
            "kernel_sizes": [[3, 3, 3]] * n_stages, "strides": strides,
            "n_conv_per_stage": [2] * n_stages, "n_conv_per_stage_decoder": [2] * (n_stages - 1)}},
    }}}


def test_quick_replaces_network_and_patch_and_carries_its_recipe():
    plans = planned(6)
    name = add_profile_configuration(plans, PROFILES["quick"])
    config = plans["configurations"][name]
    kwargs = config["architecture"]["arch_kwargs"]
    assert config["inherits_from"] == "3d_fullres" and kwargs["n_stages"] == 4
    assert kwargs["features_per_stage"] == [16, 32, 64, 128] and kwargs["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 3
    assert config["patch_size"] == [48, 64, 64] and all(p % 8 == 0 for p in config["patch_size"])
    assert config["ipnp_recipe"]["optimizer"] == "adamw"


def test_a_small_image_keeps_nnunets_fewer_stages():
    plans = planned(2, patch=(8, 12, 14))
    kwargs = plans["configurations"][add_profile_configuration(plans, PROFILES["tiny"])]["architecture"]["arch_kwargs"]
    assert kwargs["n_stages"] == 2 and kwargs["features_per_stage"] == [8, 16]
    assert len(kwargs["kernel_sizes"]) == len(kwargs["strides"]) == len(kwargs["n_conv_per_stage"]) == 2


def test_default_is_nnunets_own_plan():
    plans = planned(5)
    before = copy.deepcopy(plans)
    assert add_profile_configuration(plans, PROFILES["default"]) == "3d_fullres" and plans == before
