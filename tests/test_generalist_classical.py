"""The classical generalist (quality with ground-truth prompts, mask contract, determinism) and
``evaluate_generalist``."""

from __future__ import annotations

import ast
import csv
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

import ipnp.generalist.classical as classical
from ipnp.data.labels import AMOS_ORGANS, OPENKBP_ORGANS
from ipnp.data.synth import make_phantom
from ipnp.errors import IpnpError
from ipnp.generalist.base import Generalist
from ipnp.generalist.classical import ClassicalGeneralist
from ipnp.generalist.evaluate import evaluate_generalist
from ipnp.pseudo.prompts import AnatomicalAxes, PromptPair, box_prompts

from conftest import make_dataset

# The quality goals (GT-prompt Dice >= 0.85 on phantoms, not met; >= 0.70 on OpenKBP, met at 0.703) are
# measured by benchmarks/classical_quality.py on whole datasets, which is too slow for the test suite.


# --- the mask contract -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    image, label, _ = make_phantom(5, shape=(40, 64, 64))
    return image, label


def test_masks_are_boolean_image_shaped_and_inside_the_roi(phantom: tuple[np.ndarray, np.ndarray]) -> None:
    image, label = phantom
    generalist = ClassicalGeneralist()
    generalist.set_image(image, (5.0, 5.0, 5.0))
    for organ in (1, 6, 8, 14):  # a blob, a large organ, a tube, a fluid organ
        prompts = box_prompts(label == organ)
        mask = generalist.segment(prompts)
        assert mask.dtype == bool and mask.shape == image.shape
        assert mask.any()
        assert not (mask & ~prompts.roi_mask(image.shape)).any()


def test_a_crop_over_the_voxel_budget_is_segmented_on_a_coarser_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The liver's crop under a budget of a sixth of its voxels: stride 2, and nearly the same mask."""
    image, label, _ = make_phantom(5, shape=(80, 128, 128))
    organ = label == 6
    prompts = box_prompts(organ)
    generalist = ClassicalGeneralist()
    generalist.set_image(image, (5.0, 5.0, 5.0))
    crops = []
    segment_crop = classical._segment_crop

    def spy(volume, *args):
        crops.append(volume.shape)
        return segment_crop(volume, *args)

    monkeypatch.setattr(classical, "_segment_crop", spy)
    full = generalist.segment(prompts)
    monkeypatch.setattr(classical, "_VOXEL_BUDGET", int(np.prod(crops[0])) // 6)
    coarse = generalist.segment(prompts)
    assert all(-(-n // 2) == c for n, c in zip(crops[0], crops[1]))  # every axis at stride 2
    assert coarse.shape == image.shape and not (coarse & ~prompts.roi_mask(image.shape)).any()
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())  # noqa: E731
    assert dice(coarse, full) > 0.85 and dice(coarse, organ) > dice(full, organ) - 0.1  # measured: 0.90; 0.78 vs 0.84


@pytest.mark.parametrize("content", ["constant", "noise"])
def test_images_without_contrast_do_not_crash(content: str) -> None:
    shape = (24, 32, 32)
    zz, yy, xx = np.indices(shape)
    ball = (zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 15) ** 2 <= 36
    image = np.full(shape, 40.0, np.float32)
    if content == "noise":
        image += np.random.default_rng(0).normal(0, 20, shape).astype(np.float32)
    prompts = box_prompts(ball)
    with ClassicalGeneralist() as generalist:
        generalist.set_image(image, (3.0, 3.0, 3.0))
        mask = generalist.segment(prompts)
    assert mask.dtype == bool and mask.shape == shape
    assert not (mask & ~prompts.roi_mask(shape)).any()


def test_boxes_clipped_at_the_image_border(phantom: tuple[np.ndarray, np.ndarray]) -> None:
    image, label = phantom
    generalist = ClassicalGeneralist()
    generalist.set_image(image, (5.0, 5.0, 5.0))
    bladder, liver = box_prompts(label == 14), box_prompts(label == 6)
    # The bladder reaches the first slice, the liver the last: their padding is cut by the border.
    assert bladder.sagittal.bounds[0][0] == 0 and liver.sagittal.bounds[0][1] == image.shape[0]
    for prompts, organ in ((bladder, 14), (liver, 6)):
        mask = generalist.segment(prompts)
        assert (mask & (label == organ)).sum() > 0.5 * mask.sum()


def test_a_box_side_clipped_by_the_border_is_uncertain() -> None:
    # Padding 6: a box reaching the border says only that the organ ends within 6 voxels of it.
    bounds = ((0, 20), (10, 30), (7, 8))
    assert classical._tight_box(bounds, (20, 40, 40), 6) == [(0, 20), (16, 24), (7, 8)]
    assert classical._sure_box(bounds, (20, 40, 40), 6) == [(5, 15), (16, 24), (7, 8)]


def test_an_organ_ending_short_of_the_border_is_not_stretched_to_it() -> None:
    """A bright block ending 4 slices before the image's last one, beneath air (the lung above the
    spleen): its box reaches the border, the block does not. Pinning the box's last slice took in the air
    (171 voxels of it; now none)."""
    rng = np.random.default_rng(0)
    shape = (24, 32, 32)
    image = rng.normal(40, 10, shape).astype(np.float32)
    organ = np.zeros(shape, bool)
    organ[6:20, 10:22, 10:22] = True
    image[organ] = rng.normal(120, 10, int(organ.sum()))
    image[20:] = rng.normal(-800, 30, image[20:].shape)
    prompts = box_prompts(organ)
    assert prompts.sagittal.bounds[0][1] == shape[0]  # clipped by the border
    generalist = ClassicalGeneralist()
    generalist.set_image(image, (3.0, 3.0, 3.0))
    mask = generalist.segment(prompts)
    assert 2 * (mask & organ).sum() / (mask.sum() + organ.sum()) > 0.95
    assert mask[20:].sum() < 20


def test_segment_needs_an_image() -> None:
    ball = np.zeros((16, 16, 16), bool)
    ball[6:10, 6:10, 6:10] = True
    with pytest.raises(IpnpError, match="set_image"):
        ClassicalGeneralist().segment(box_prompts(ball))


# --- the method's steps, on shapes that defeated earlier versions ------------------------------------------


def _u_shaped_bone() -> tuple[np.ndarray, np.ndarray]:
    """Bright bone in soft tissue: two upright bars joined at the bottom by a bridge in front, like a
    mandible. The median axial slice cuts the bars above the bridge; the median sagittal slice sees the
    bridge only."""
    shape = (28, 40, 40)
    rng = np.random.default_rng(0)
    image = rng.normal(40, 10, shape).astype(np.float32)
    image[:, :, :4] = image[:, :, -4:] = -1000
    bone = np.zeros(shape, bool)
    bone[4:24, 12:24, 10:14] = bone[4:24, 12:24, 26:30] = True
    bone[4:10, 12:16, 10:30] = True
    image[bone] = rng.normal(600, 60, int(bone.sum()))
    return image, bone


def test_a_slice_beside_the_other_slices_box_takes_the_organ_not_its_surroundings() -> None:
    image, bone = _u_shaped_bone()
    prompts = box_prompts(bone)
    za = prompts.axial.bounds[0][0]
    z_lo, z_hi = classical._tight_box(prompts.sagittal.bounds, image.shape, 6)[0]
    assert not z_lo <= za < z_hi  # the case at hand: the sagittal box stops below the axial slice
    generalist = ClassicalGeneralist()
    generalist.set_image(image, (3.0, 3.0, 3.0))
    mask = generalist.segment(prompts)
    # Between the bars is soft tissue, which the slice's own EM, and pins in its empty columns, used to
    # take for the organ.
    assert not mask[za, 12:24, 15:25].any()
    # Above the prompt slice, beyond the sagittal box, the bars go on (the extent is centred on za).
    z = za + 3
    assert 2 * (mask[z] & bone[z]).sum() / (mask[z].sum() + bone[z].sum()) >= 0.8


def test_pins_of_an_organ_in_pieces_go_on_the_boxs_sides_only() -> None:
    mask = np.zeros((30, 40), bool)
    mask[12:24, 10:14] = mask[12:24, 26:30] = True  # two bars: every side of the box is touched
    unary = np.zeros(mask.shape)
    allowed = np.ones(mask.shape, bool)
    pins = np.zeros(mask.shape, bool)
    assert not classical._pin_empty_lines(mask, unary, allowed, (12, 24), (10, 30), pins, sides_only=True)
    assert not pins.any()
    # Pinning every line fills the columns between the bars.
    assert classical._pin_empty_lines(mask, unary, allowed, (12, 24), (10, 30), pins)
    assert pins[:, 14:26].any(axis=0).all()


def test_a_tracked_cross_section_follows_a_drifting_tube() -> None:
    """A soft-tissue tube in a bony ring, drifting along y; outside the ring is soft tissue too."""
    rng = np.random.default_rng(0)
    image = rng.normal(40, 10, (30, 24, 20)).astype(np.float32)
    yy, xx = np.mgrid[0:24, 0:20]
    centre = [6 + z // 3 for z in range(30)]
    for z, cy in enumerate(centre):
        radius = np.hypot(yy - cy, xx - 10)
        image[z][(radius >= 1.6) & (radius < 3.2)] = 700
    axial = np.hypot(yy - centre[15], xx - 10) < 1.6
    prior = classical._tracked_prior(image, axial, 15, 10, (0, 30))
    assert [abs(int(np.argmax(prior[z])) - cy) <= 1 for z, cy in enumerate(centre)] == [True] * 30
    assert prior[0, centre[15]] < 0  # the prompt slice's position is not simply copied along z


def test_a_retraced_tube_does_not_jump_into_a_pocket_beside_it() -> None:
    score = np.full((30, 20), -1.0)
    score[:, 8:11] = 2.0  # the tube
    score[10:18, 12:16] = 3.0  # organ-like intensities one voxel beside it
    mask = classical._interval_dp(score, 0, (8, 11), (0, 30), (0, 20))
    assert mask[:, 8:11].all() and not mask[:, 11:].any()


# --- no organ-specific behaviour -----------------------------------------------------------------------


def test_result_depends_on_image_and_prompts_only(phantom: tuple[np.ndarray, np.ndarray]) -> None:
    image, label = phantom
    prompts = box_prompts(label == 3)
    first = ClassicalGeneralist()
    first.set_image(image, (5.0, 5.0, 5.0))
    a = first.segment(prompts)
    first.segment(box_prompts(label == 7))  # another organ in between leaves no trace
    b = first.segment(prompts)
    fresh = ClassicalGeneralist()
    fresh.set_image(image.copy(), (1.0, 2.0, 3.0))  # spacing is not used
    c = fresh.segment(PromptPair(prompts.axial, prompts.sagittal))
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_result_follows_the_anatomical_axes(phantom: tuple[np.ndarray, np.ndarray]) -> None:
    image, label = phantom
    organ = label == 2
    generalist = ClassicalGeneralist()
    generalist.set_image(image, (5.0, 5.0, 5.0))
    expected = generalist.segment(box_prompts(organ))
    # The same volume stored with the body axis second: the axial slices lie across array axis 1.
    generalist.set_image(np.ascontiguousarray(image.transpose(1, 0, 2)), (5.0, 5.0, 5.0))
    swapped = generalist.segment(box_prompts(organ.transpose(1, 0, 2), axes=AnatomicalAxes(axial=1, sagittal=2)))
    assert np.array_equal(swapped, expected.transpose(1, 0, 2))


def test_no_organ_is_named_in_the_code() -> None:
    """No identifier or string in the method's code (docstrings aside) names an organ."""
    tree = ast.parse(inspect.getsource(classical))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None
    }
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, (ast.Attribute,)):
            words.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            words.add(node.name)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
    code = " ".join(words).lower()
    qualifiers = {"left", "right", "inferior", "gland"}
    for name in (*AMOS_ORGANS.values(), *OPENKBP_ORGANS.values()):
        for word in set(name.lower().replace("/", " ").split()) - qualifiers:
            assert word not in code, f"{word!r} appears in the code of ipnp/generalist/classical.py"


# --- evaluate_generalist -------------------------------------------------------------------------------


class _HullGeneralist(Generalist):
    """Answers with the prompts' ROI: enough to test the bookkeeping."""

    name = "hull"

    def set_image(self, image: np.ndarray, spacing_zyx: tuple[float, float, float]) -> None:
        self.shape = image.shape

    def segment(self, prompts: PromptPair) -> np.ndarray:
        return prompts.roi_mask(self.shape, dilation=0)


def test_evaluate_generalist_writes_scores_of_labeled_organs_only(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", n_train=3, n_test=1, manifest={"case_000": [1, 2], "case_001": ["kidney"]})
    out = tmp_path / "eval"
    summary = evaluate_generalist(root, _HullGeneralist(), out)

    with open(out / "per_organ.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "organ_id", "organ", "dice", "seconds", "voxels"]
    scored = {(r["case"], int(r["organ_id"])) for r in rows}
    # case_002 is not in the manifest: fully labeled.
    assert scored == {("case_000", 1), ("case_000", 2), ("case_001", 3)} | {("case_002", o) for o in (1, 2, 3)}
    assert all(0.0 < float(r["dice"]) <= 1.0 and int(r["voxels"]) > 0 for r in rows)

    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["organs"]["liver"]["n"] == 2 and summary["organs"]["kidney"]["n"] == 2
    per_organ = [o["dice"] for o in summary["organs"].values()]
    assert summary["mean_dice"] == pytest.approx(np.mean(per_organ))
    assert summary["seconds_per_organ"] >= 0.0
    assert not list(out.glob(".ipnp-tmp*"))


def test_evaluate_generalist_scores_the_test_split_and_rejects_unknown_cases(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", n_train=1, n_test=2)
    summary = evaluate_generalist(root, _HullGeneralist(), tmp_path / "eval", split="test", cases=["case_002"])
    assert summary["cases"] == 1 and summary["split"] == "test"
    with pytest.raises(IpnpError, match="case_999"):
        evaluate_generalist(root, _HullGeneralist(), tmp_path / "eval2", cases=["case_999"])
