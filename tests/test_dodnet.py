"""The DoDNet baseline: its dynamic head, its partial loss, and training and prediction through nnU-Net."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch.nn import functional as F

from ipnp.baselines.dodnet import DoDNet
from ipnp.data import PartialDataset
from ipnp.data.partial import simulate_partial_labels
from ipnp.data.synth import synthesize_dataset

ORGANS = 5


@pytest.fixture
def net() -> DoDNet:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(0)
    unet = PlainConvUNet(1, 3, [8, 16, 32], torch.nn.Conv3d, 3, [1, 2, 2], 1, ORGANS, 1, True, torch.nn.InstanceNorm3d,
                         {"affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True})
    return DoDNet(unet, ORGANS)


def test_the_dynamic_head_depends_on_the_organ_code(net):
    x = torch.randn(2, 1, 8, 16, 16)
    logits = net(x)
    assert logits.shape == (2, ORGANS, 8, 16, 16)
    # Every organ's head reads the same features; only the code fed to the controller differs.
    for k in range(1, ORGANS):
        assert (logits[:, 0] - logits[:, k]).abs().max() > 1e-3
    # The code is the only per-organ input: giving organ 0 organ 1's code reproduces organ 1's logits.
    skips = net.encoder(x)
    params = net.head_parameters(skips[-1])
    features = net.precls_conv(net.decoder(skips))
    torch.testing.assert_close(net.run_head(features, params[:, [1, 1]]), logits[:, [1, 1]])


def test_the_controller_is_one_linear_map_of_pooled_features_and_organ_code(net):
    """DoDNet's controller: [pooled bottleneck features, one-hot organ code] -> head parameters."""
    skips = net.encoder(torch.randn(2, 1, 8, 16, 16))
    pooled = skips[-1].mean((2, 3, 4))
    joint = torch.cat([net.controller_context.weight, net.controller_code.weight], 1)
    for k in range(ORGANS):
        code = F.one_hot(torch.tensor([k, k]), ORGANS).float()
        expected = F.linear(torch.cat([pooled, code], 1), joint, net.controller_code.bias)
        torch.testing.assert_close(net.head_parameters(skips[-1])[:, k], expected)


def test_the_controller_learns_from_each_organs_code(net):
    logits = net(torch.randn(2, 1, 8, 16, 16))
    logits[:, 2].square().mean().backward()
    assert net.controller_context.weight.grad.abs().sum() > 0  # the pooled bottleneck features
    code_grad = net.controller_code.weight.grad.abs().sum(0)
    assert code_grad[2] > 0 and torch.all(code_grad[[0, 1, 3, 4]] == 0)  # only organ 2's code saw the loss
    assert net.encoder.stages[0][0].convs[0].conv.weight.grad.abs().sum() > 0


def test_batched_head_equals_one_grouped_conv_head_per_sample_and_organ(net):
    """DoDNet's own formulation: per sample and organ, split the parameters and run three 1x1x1 convs."""
    x = torch.randn(2, 1, 8, 16, 16)
    logits = net(x)
    skips = net.encoder(x)
    params = net.head_parameters(skips[-1])
    features = net.precls_conv(net.decoder(skips))
    for b in range(2):
        for t in range(ORGANS):
            w1, w2, w3, b1, b2, b3 = params[b, t].split([64, 64, 8, 8, 8, 1])
            h = F.relu(F.conv3d(features[b : b + 1], w1.reshape(8, 8, 1, 1, 1), b1))
            h = F.relu(F.conv3d(h, w2.reshape(8, 8, 1, 1, 1), b2))
            torch.testing.assert_close(F.conv3d(h, w3.reshape(1, 8, 1, 1, 1), b3)[0, 0], logits[b, t])


@pytest.fixture(scope="module")
def partial(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dodnet")
    synthesize_dataset(root / "full", n_train=4, n_test=1, seed=0, shape=(32, 48, 48))
    simulate_partial_labels(root / "full", root / "partial", keep=0.67, seed=0)
    return root / "partial"


@pytest.fixture(scope="module")
def dodnet_run(partial, tmp_path_factory) -> Path:
    from ipnp.specialist.train import train_specialist

    run = tmp_path_factory.mktemp("runs") / "dodnet"
    train_specialist(partial, run, "dodnet", "tiny", epochs=1, iterations=2, device="cpu")
    return run


def test_dodnet_trains_and_predicts_through_nnunet(dodnet_run, partial, tmp_path):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from ipnp.specialist.predict import Specialist

    record = json.loads((dodnet_run / "specialist.json").read_text())
    assert record["trainer"] == "nnUNetTrainer_ipnpDoDNet"
    assert recursive_find_trainer_class_by_name(record["trainer"]).__name__ == "nnUNetTrainer_ipnpDoDNet"
    checkpoint = torch.load(next(dodnet_run.rglob("checkpoint_final.pth")), map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    num_params = 8 * 8 + 8 * 8 + 8 + 8 + 8 + 1
    assert weights["controller_code.weight"].shape == (num_params, len(PartialDataset(partial).organ_ids))
    assert weights["controller_context.weight"].shape[0] == num_params
    assert not any(k.startswith("decoder.seg_layers") for k in weights)  # the dynamic head replaced them

    ds = PartialDataset(partial)
    specialist = Specialist(dodnet_run, device="cpu")
    assert not specialist.is_softmax
    out = specialist.predict_folder(partial / "imagesTs", tmp_path / "pred")
    for case in ds.test_ids:
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        assert set(np.unique(labels)) <= {0, *ds.organ_ids}


def test_the_loss_ignores_organs_a_case_has_not_labeled(dodnet_run, partial):
    from ipnp.specialist.train import _build_trainer

    preprocessed = dodnet_run / "nnunet" / "preprocessed" / "Dataset501_ipnp"
    trainer = _build_trainer("nnUNetTrainer_ipnpDoDNet", preprocessed, "ipnp_tiny", torch.device("cpu"), resume=False)
    trainer.initialize()
    assert not trainer.enable_deep_supervision
    ds = PartialDataset(partial)
    cases = [c for c in ds.training_ids if ds.unknown_organs(c)][:2]
    trainer._set_status(np.array(cases))
    channel = {organ: k for k, organ in enumerate(sorted(ds.organ_ids))}
    torch.manual_seed(0)
    with torch.no_grad():
        logits = trainer.network(torch.randn(len(cases), 1, *trainer.configuration_manager.patch_size))
    assert logits.shape[1] == len(ds.organ_ids)
    target = (torch.rand_like(logits) > 0.9).float()
    loss = trainer.loss(logits, target)

    changed = target.clone()
    for b, case in enumerate(cases):
        for organ in ds.unknown_organs(case):
            changed[b, channel[organ]] = 1 - changed[b, channel[organ]]
    assert trainer.loss(logits, changed) == loss
    labeled = min(ds.labeled_organs(cases[0]))
    changed[0, channel[labeled]] = 1 - changed[0, channel[labeled]]
    assert trainer.loss(logits, changed) != loss


def test_adamw_moves_the_controllers_pooled_feature_weights_at_lr_over_their_number(dodnet_run):
    """Each head parameter sums one such weight per pooled feature; at AdamW's lr it would jump by ~lr * features."""
    from ipnp.specialist.train import _build_trainer

    preprocessed = dodnet_run / "nnunet" / "preprocessed" / "Dataset501_ipnp"
    trainer = _build_trainer("nnUNetTrainer_ipnpDoDNet", preprocessed, "ipnp_tiny", torch.device("cpu"), resume=False)
    trainer.initialize()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    context = trainer.network.controller_context.weight
    main, scaled = trainer.optimizer.param_groups
    assert scaled["params"] == [context]
    assert {id(p) for p in main["params"]} == {id(p) for p in trainer.network.parameters()} - {id(context)}
    for epoch in (0, trainer.num_epochs // 2):
        trainer.lr_scheduler.step(epoch)
        assert main["lr"] == pytest.approx(trainer.initial_lr * (1 - epoch / trainer.num_epochs) ** 0.9)
        assert scaled["lr"] == pytest.approx(main["lr"] / context.shape[1])
