import pytest
import torch

from ipnp.specialist import losses
from ipnp.specialist.losses import LABELED, PSEUDO, UNKNOWN, MarginalDiceCELoss, PartialBCEDiceLoss


def _batch(b=2, c=4, shape=(6, 7, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, *shape, generator=g)
    target = torch.randint(0, c, (b, 1, *shape), generator=g).float()
    return logits, target


@pytest.mark.parametrize("batch_dice", [False, True])
def test_marginal_equals_stock_when_everything_is_labeled(batch_dice):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    logits, target = _batch()
    stock = DC_and_CE_loss(
        {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, dice_class=MemoryEfficientSoftDiceLoss
    )
    ours = MarginalDiceCELoss(batch_dice=batch_dice)
    ours.status = torch.full((2, 4), LABELED, dtype=torch.int8)
    torch.testing.assert_close(ours(logits, target), stock(logits, target))
    ours.status = None  # no table means the same
    torch.testing.assert_close(ours(logits, target), stock(logits, target))


def test_unknown_organ_predicted_on_its_voxels_costs_nothing():
    """Organ 2 is unknown in the case: its voxels are 0 in the mask. Predicting 2 there must not be penalised."""
    shape = (4, 4, 4)
    target = torch.zeros(1, 1, *shape)
    target[0, 0, :2] = 1  # organ 1 labeled in the upper half
    organ2 = torch.zeros(shape, dtype=torch.bool)
    organ2[2:, :2] = True  # where organ 2 really is, but unlabeled (0)
    confident = lambda cls: torch.nn.functional.one_hot(cls, 3).permute(3, 0, 1, 2)[None].float() * 20
    truth = torch.where(target[0, 0] == 1, 1, torch.where(organ2, 2, 0)).long()
    as_background = torch.where(target[0, 0] == 1, 1, 0).long()

    loss = MarginalDiceCELoss(batch_dice=False)
    loss.status = torch.tensor([[LABELED, LABELED, UNKNOWN]], dtype=torch.int8)
    assert loss(confident(truth), target).item() == pytest.approx(loss(confident(as_background), target).item(), abs=1e-6)
    # The same organ, once labeled, is penalised when predicted where the mask says background.
    loss.status = torch.tensor([[LABELED, LABELED, LABELED]], dtype=torch.int8)
    assert loss(confident(truth), target) > loss(confident(as_background), target) + 1.0


def test_unknown_organ_gets_no_gradient_but_background_probability_does():
    logits, target = _batch(b=1, c=3)
    target = torch.where(target == 2, 0, target)  # organ 2 unknown: never in the mask
    logits.requires_grad_(True)
    loss = MarginalDiceCELoss(batch_dice=False)
    loss.status = torch.tensor([[LABELED, LABELED, UNKNOWN]], dtype=torch.int8)
    loss(logits, target).backward()
    # Raising organ 2's logit on a background voxel moves mass inside the merged class: the CE part is blind
    # to it, so its gradient there equals the background logit's share only through softmax normalisation.
    grad = logits.grad[0]
    bg = target[0, 0] == 0
    assert torch.allclose(grad[0][bg] / torch.softmax(logits, 1)[0, 0][bg].detach(),
                          grad[2][bg] / torch.softmax(logits, 1)[0, 2][bg].detach(), atol=1e-5)


def test_vls_keeps_only_agreeing_pseudo_voxels_and_all_true_ones():
    shape = (4, 4, 4)
    target = torch.zeros(1, 1, *shape)
    target[0, 0, :2] = 1  # organ 1: ground truth
    target[0, 0, 2:, :2] = 2  # organ 2: pseudo-label
    logits = torch.zeros(1, 3, *shape)
    logits[0, 0] = 5.0  # the network predicts background everywhere: disagrees with both organs
    status = torch.tensor([[LABELED, LABELED, PSEUDO]], dtype=torch.int8)
    vls, plain = MarginalDiceCELoss(False, voxel_selection=True), MarginalDiceCELoss(False)
    vls.status = plain.status = status
    # Changing the logits on pseudo voxels where the network disagrees cannot change the VLS loss...
    moved = logits.clone()
    moved[0, 2][target[0, 0] == 2] = -3.0
    assert vls(moved, target) == pytest.approx(vls(logits, target).item(), abs=1e-6)
    assert plain(moved, target) != pytest.approx(plain(logits, target).item(), abs=1e-3)
    # ...while the disagreeing true-label voxels of organ 1 still count.
    moved = logits.clone()
    moved[0, 1][target[0, 0] == 1] = 4.0
    assert vls(moved, target) < vls(logits, target) - 0.1
    # Once the network agrees on a pseudo voxel, that voxel counts.
    agree = logits.clone()
    agree[0, 2][target[0, 0] == 2] = 10.0
    agree_more = agree.clone()
    agree_more[0, 2][target[0, 0] == 2] = 12.0
    assert vls(agree_more, target) < vls(agree, target)


def test_partial_sup_ignores_unlabeled_channels():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 5, 5, generator=g)
    target = (torch.rand(2, 3, 5, 5, 5, generator=g) > 0.7).float()
    loss = PartialBCEDiceLoss(batch_dice=False)
    loss.status = torch.tensor([[LABELED, LABELED, UNKNOWN, LABELED], [LABELED, UNKNOWN, LABELED, LABELED]], dtype=torch.int8)
    base = loss(logits, target)
    scrambled = logits.clone()
    scrambled[0, 1] = torch.randn(5, 5, 5, generator=g) * 10  # organ 2 of case 0: unknown
    scrambled[1, 0] = -scrambled[1, 0]  # organ 1 of case 1: unknown
    assert loss(scrambled, target) == pytest.approx(base.item(), abs=1e-6)
    scrambled[0, 0] = -scrambled[0, 0]  # organ 1 of case 0 is labeled: counts
    assert loss(scrambled, target) != pytest.approx(base.item(), abs=1e-4)


def test_partial_sup_matches_nnunet_bce_dice_when_everything_is_labeled():
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, 5, 5, generator=g)
    target = (torch.rand(2, 3, 5, 5, 5, generator=g) > 0.7).float()
    stock = DC_and_BCE_loss({}, {"batch_dice": False, "do_bg": True, "smooth": 1e-5, "ddp": False}, dice_class=MemoryEfficientSoftDiceLoss)
    torch.testing.assert_close(PartialBCEDiceLoss(batch_dice=False)(logits, target), stock(logits, target))


@pytest.mark.parametrize("vls", [False, True])
def test_half_precision_logits_give_finite_loss_and_gradients(vls):
    """On CUDA nnU-Net runs the network under autocast; the loss must not overflow or underflow in float16."""
    logits, target = _batch(b=2, c=4, shape=(24, 24, 24))
    logits = (logits * 40).half().requires_grad_(True)  # confident, partly wrong predictions
    loss = MarginalDiceCELoss(batch_dice=True, voxel_selection=vls)
    loss.status = torch.tensor([[LABELED, LABELED, UNKNOWN, PSEUDO], [LABELED, UNKNOWN, PSEUDO, LABELED]], dtype=torch.int8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits, target)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("vls", [False, True])
def test_positive_only_pseudo_label_leaves_its_organ_free_on_background(vls):
    """Predicting a pseudo-labeled organ where the pseudo-label says background costs nothing, as for an
    unknown organ; without the option it costs, and inside the pseudo-label the organ is supervised."""
    shape = (4, 4, 4)
    target = torch.zeros(1, 1, *shape)
    target[0, 0, :2] = 1  # organ 1: ground truth
    target[0, 0, 2:, :2] = 2  # organ 2: an incomplete pseudo-label
    logits = torch.zeros(1, 3, *shape)
    logits[0, 1][target[0, 0] == 1] = 6.0
    logits[0, 2][target[0, 0] == 2] = 6.0
    status = torch.tensor([[LABELED, LABELED, PSEUDO]], dtype=torch.int8)
    positive = MarginalDiceCELoss(False, voxel_selection=vls, pseudo_positive_only=True)
    paper = MarginalDiceCELoss(False, voxel_selection=vls)
    positive.status = paper.status = status
    grown = logits.clone()
    grown[0, 2][target[0, 0] == 0] = 6.0  # organ 2 predicted beyond its pseudo-label, on background
    assert positive(grown, target) <= positive(logits, target) + 1e-6  # merged with the background: no cost
    assert paper(grown, target) > paper(logits, target) + 0.1
    # Background predicted as ground-truth organ 1 still costs: labeled organs are unaffected.
    wrong = logits.clone()
    wrong[0, 1][target[0, 0] == 0] = 6.0
    assert positive(wrong, target) > positive(logits, target) + 0.1
    # Inside the pseudo-label the organ is supervised (it counts where the network agrees, under VLS).
    better = logits.clone()
    better[0, 2][target[0, 0] == 2] = 9.0
    assert positive(better, target) < positive(logits, target)


def _reference_marginal_loss(logits, target, status, vls, positive_only, smooth=1e-5):
    """The marginal/VLS loss written out voxel by voxel with one-hot tensors (batch_dice off)."""
    b, c = logits.shape[:2]
    p = torch.softmax(logits.double(), 1).reshape(b, c, -1)
    t = target.reshape(b, -1).long()
    one_hot = torch.nn.functional.one_hot(t, c).permute(0, 2, 1).double()
    merged = (status == UNKNOWN) | ((status == PSEUDO) & positive_only)
    p_target = (p * one_hot).sum(1)
    p_background = p[:, 0] + (p * merged[:, :, None]).sum(1)
    ce_voxel = -torch.where(t == 0, p_background, p_target).log()
    pseudo_voxel = (status == PSEUDO).gather(1, t)
    mask = (~pseudo_voxel | (p_target >= p.amax(1))).double() if vls else torch.ones_like(p_target)
    ce = (ce_voxel * mask).sum() / mask.sum()
    dice_terms = []
    for i in range(b):
        for k in range(1, c):
            if status[i, k] == UNKNOWN:
                continue
            where = mask[i] * ((t[i] != 0).double() if positive_only and status[i, k] == PSEUDO else 1.0)
            intersect = (p[i, k] * one_hot[i, k] * mask[i]).sum()
            dc = (2 * intersect + smooth) / ((one_hot[i, k] * mask[i]).sum() + (p[i, k] * where).sum() + smooth)
            dice_terms.append(-dc)
    return ce + torch.stack(dice_terms).mean()


@pytest.mark.parametrize("matmul_sums", [None, False], ids=["by-device", "mul-sum"])
@pytest.mark.parametrize("vls", [False, True])
@pytest.mark.parametrize("positive_only", [False, True])
def test_marginal_loss_matches_its_voxelwise_definition(vls, positive_only, matmul_sums, monkeypatch):
    """Every status mix, each sample its own: the fused sums equal the loss written out with one-hot tensors.

    ``mul-sum`` is the form the masked sums take on a GPU; here it runs on the CPU.
    """
    monkeypatch.setattr(losses, "MATMUL_SUMS", matmul_sums)
    logits, target = _batch(b=3, c=5, seed=3)
    logits = logits * 3  # confident enough that VLS drops a share of the pseudo voxels
    status = torch.tensor([[LABELED, LABELED, PSEUDO, UNKNOWN, PSEUDO],
                           [LABELED, PSEUDO, UNKNOWN, LABELED, LABELED],
                           [LABELED, LABELED, LABELED, LABELED, LABELED]], dtype=torch.int8)
    target = torch.where((status == UNKNOWN).gather(1, target.reshape(3, -1).long()).reshape(target.shape), 0, target)
    loss = MarginalDiceCELoss(False, voxel_selection=vls, pseudo_positive_only=positive_only)
    loss.status = status
    expected = _reference_marginal_loss(logits, target, status, vls, positive_only)
    torch.testing.assert_close(loss(logits, target).double(), expected, rtol=1e-5, atol=1e-6)
