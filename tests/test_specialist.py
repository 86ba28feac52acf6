"""End to end on phantoms with the tiny profile: train, predict, evaluate, through the real nnU-Net stack."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import full_labels_as_pseudo, tree_digest
from ipnp.cli import main
from ipnp.data import PartialDataset
from ipnp.data.partial import simulate_partial_labels
from ipnp.data.synth import synthesize_dataset
from ipnp.specialist.losses import LABELED, PSEUDO, UNKNOWN

FAST = ["--profile", "tiny", "--epochs", "2", "--iterations", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def partial(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("specialist")
    synthesize_dataset(root / "full", n_train=8, n_test=1, seed=0)
    simulate_partial_labels(root / "full", root / "partial", keep=0.67, seed=0)
    return root / "partial"


@pytest.fixture(scope="module")
def marginal_run(partial, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "marginal"
    before = tree_digest(partial)
    assert main(["train", str(partial), "--out", str(run), "--method", "marginal", *FAST]) == 0
    assert tree_digest(partial) == before  # the input dataset is never written
    return run


def test_marginal_training_records_a_model_nnunet_can_find(marginal_run):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    record = json.loads((marginal_run / "specialist.json").read_text())
    assert record["method"] == "marginal" and record["configuration"] == "ipnp_tiny" and record["epochs"] == 2
    model = marginal_run / record["model_dir"]
    assert (model / "fold_all" / "checkpoint_final.pth").is_file()
    plans = json.loads((model / "plans.json").read_text())
    arch = plans["configurations"]["ipnp_tiny"]["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"] == [8, 16, 32, 64] and arch["n_conv_per_stage"] == [1, 1, 1, 1]
    trainer = recursive_find_trainer_class_by_name(record["trainer"])
    assert trainer.__name__ == "nnUNetTrainer_ipnpMarginal"


def test_status_comes_from_the_manifest_through_batch_keys(marginal_run, partial):
    from ipnp.specialist.train import _build_trainer

    ds = PartialDataset(partial)
    record = json.loads((marginal_run / "specialist.json").read_text())
    preprocessed = marginal_run / "nnunet" / "preprocessed" / "Dataset501_ipnp"
    import torch

    trainer = _build_trainer(record["trainer"], preprocessed, record["configuration"], torch.device("cpu"), resume=False)
    trainer.initialize()
    # The tiny profile's recipe reaches the trainer through the plans: AdamW, and no mirroring.
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.optimizer.defaults["lr"] == 1e-2
    assert trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3] is None
    cases = ds.training_ids[:2]
    trainer._set_status(np.array(cases))
    status = trainer._status_loss.status.numpy()
    for row, case in zip(status, cases):
        assert row[0] == LABELED
        assert {i for i in ds.organ_ids if row[i] == LABELED} == ds.labeled_organs(case)
        assert {i for i in ds.organ_ids if row[i] == UNKNOWN} == ds.unknown_organs(case)


def test_prediction_probabilities_sum_to_one_in_raw_geometry(marginal_run, partial):
    from ipnp.specialist.predict import Specialist

    specialist = Specialist(marginal_run, device="cpu")
    case = PartialDataset(partial).case(PartialDataset(partial).test_ids[0], "test")
    image, geometry = case.load_image()
    labels, probs = specialist.predict(image, geometry)
    probs = np.asarray(probs)  # computed on demand, region by region; here all of them
    assert labels.shape == image.shape[1:] and labels.dtype == np.uint8
    assert probs.shape == (16, *image.shape[1:]) and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
    assert np.mean(probs.argmax(0) == labels) > 0.99


def test_predict_and_evaluate_cli(marginal_run, partial, tmp_path):
    pred = tmp_path / "pred"
    assert main(["predict", str(marginal_run), str(partial / "imagesTs"), str(pred), "--probabilities", "--device", "cpu"]) == 0
    case = PartialDataset(partial).test_ids[0]
    assert (pred / f"{case}.nii.gz").is_file()
    assert np.load(pred / f"{case}.npz")["probabilities"].shape[0] == 16
    assert main(["evaluate", str(pred), str(partial / "labelsTs"), "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert 0.0 <= summary["mean_dsc"] <= 1.0


def test_training_twice_into_one_run_needs_resume(marginal_run, partial, capsys):
    assert main(["train", str(partial), "--out", str(marginal_run), "--method", "marginal", *FAST]) == 2
    assert "pass --resume" in capsys.readouterr().err
    mtime = (marginal_run / "specialist.json").stat().st_mtime
    checkpoint = next(marginal_run.rglob("checkpoint_final.pth"))
    weights = checkpoint.read_bytes()
    assert main(["train", str(partial), "--out", str(marginal_run), "--method", "marginal", "--resume", *FAST]) == 0
    assert checkpoint.read_bytes() == weights  # a finished training is not redone
    assert (marginal_run / "specialist.json").stat().st_mtime >= mtime


def test_partial_sup_trains_one_sigmoid_per_organ(partial, tmp_path):
    from ipnp.specialist.predict import Specialist

    run = tmp_path / "psup"
    assert main(["train", str(partial), "--out", str(run), "--method", "partial-sup", *FAST]) == 0
    specialist = Specialist(run, device="cpu")
    assert not specialist.is_softmax
    case = PartialDataset(partial).case(PartialDataset(partial).test_ids[0], "test")
    image, geometry = case.load_image()
    labels, probs = specialist.predict(image, geometry)
    probs = np.asarray(probs)  # computed on demand, region by region; here all of them
    assert probs.shape[0] == 15 and labels.max() <= 15
    assert 0.0 <= probs.min() and probs.max() <= 1.0


def test_ipnp_training_reads_pseudo_labels_from_a_labels_folder(partial, tmp_path):
    ds = PartialDataset(partial)
    labels = tmp_path / "merged"
    pseudo = full_labels_as_pseudo(partial, labels, keep=2)
    run = tmp_path / "ipnp"
    assert main(["train", str(partial), "--out", str(run), "--method", "ipnp", "--labels", str(labels), *FAST]) == 0
    status = json.loads((run / "nnunet" / "preprocessed" / "Dataset501_ipnp" / "ipnp_label_status.json").read_text())
    for case in ds.training_ids:
        assert status[case]["pseudo"] == pseudo[case]
        assert status[case]["labeled"] == sorted(ds.labeled_organs(case))
    linked = run / "nnunet" / "raw" / "Dataset501_ipnp" / "labelsTr" / f"{ds.training_ids[0]}.nii.gz"
    assert linked.resolve() == (labels / f"{ds.training_ids[0]}.nii.gz").resolve()
    assert json.loads((run / "specialist.json").read_text())["trainer"] == "nnUNetTrainer_ipnpVLS"
    assert PSEUDO == 2  # the status codes the table above feeds to the loss


def test_pseudo_labels_as_full_evidence_train_the_papers_loss(partial, tmp_path):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from ipnp.specialist.train import train_specialist

    labels = tmp_path / "merged"
    full_labels_as_pseudo(partial, labels)
    run = tmp_path / "full-evidence"
    model = train_specialist(partial, run, "ipnp", "tiny", labels_dir=labels, epochs=1, iterations=2, device="cpu",
                             pseudo_positive_only=False)
    record = json.loads((run / "specialist.json").read_text())
    assert record["trainer"] == "nnUNetTrainer_ipnpVLSFullEvidence" and model.name.startswith(record["trainer"] + "__")
    assert (model / "fold_all" / "checkpoint_final.pth").is_file()
    trainer = recursive_find_trainer_class_by_name(record["trainer"])
    assert trainer.voxel_selection and not trainer.pseudo_positive_only
    novls = recursive_find_trainer_class_by_name("nnUNetTrainer_ipnpNoVLSFullEvidence")
    assert not novls.voxel_selection and not novls.pseudo_positive_only


def test_training_that_continues_a_model_keeps_its_plans(marginal_run, partial, tmp_path):
    """A benchmark column that adopts the shared first segment continues it in a new run folder, on labels
    with pseudo-labels. nnU-Net's fingerprint takes intensity statistics under the labels, so planning
    again there would normalise the images differently from the ones the model learned on."""
    from ipnp.specialist.train import train_specialist

    def intensities(plans: Path) -> dict:
        return json.loads(plans.read_text())["foreground_intensity_properties_per_channel"]

    labels = tmp_path / "merged"
    full_labels_as_pseudo(partial, labels)
    start = next(marginal_run.rglob("checkpoint_final.pth"))
    learned = intensities(start.parents[1] / "plans.json")
    fresh = tmp_path / "fresh"
    train_specialist(partial, fresh, "ipnp", "tiny", labels_dir=labels, epochs=1, iterations=2, device="cpu")
    assert intensities(next(fresh.rglob("nnUNetPlans.json"))) != learned  # these labels plan other statistics

    run = tmp_path / "continued"
    model = train_specialist(partial, run, "ipnp", "tiny", labels_dir=labels, epochs=3, iterations=2, device="cpu",
                             until_epoch=3, init_checkpoint=start)
    assert intensities(next(run.rglob("nnUNetPlans.json"))) == learned
    assert intensities(model / "plans.json") == learned


def test_pseudo_label_round_with_the_trained_specialist_and_nninteractive(marginal_run, partial, tmp_path):
    """The real chain: tiny specialist -> box prompts -> nnInteractive session (test checkpoint) -> store."""
    from nninteractive_checkpoint import build_checkpoint

    checkpoint = build_checkpoint(tmp_path / "nninteractive")
    ds = PartialDataset(partial)
    cases = ds.training_ids[:2]
    before = tree_digest(partial)
    out = tmp_path / "pseudo"
    assert main(["pseudo-label", str(partial), "--model", str(marginal_run), "--round", "1", "--out", str(out),
                 "--cases", *cases, "--generalist", "nninteractive", "--model-dir", str(checkpoint), "--device", "cpu",
                 "--position-check", "--max-entropy", "2.5", "--trust-cases", "1"]) == 0
    assert tree_digest(partial) == before
    status = json.loads((out / "rounds/1/pseudo_status.json").read_text())
    assert status["settings"]["position_check"] is True and status["settings"]["max_entropy"] == 2.5
    assert status["settings"]["trust_cases"] == 1 and set(status["trust"]["organs"]) == {str(o) for o in ds.organ_ids}
    assert sum(status["counts"].values()) == sum(len(ds.unknown_organs(c)) for c in cases)
    for case in cases:
        assert set(status["cases"][case]["organs"]) == {str(o) for o in ds.unknown_organs(case)}
        assert status["cases"][case]["seconds"]["predict"] > 0
        assert (out / "rounds/1/labels" / f"{case}.nii.gz").is_file()
    assert main(["pseudo-label", str(partial), "--model", str(marginal_run), "--round", "3", "--out", str(out),
                 "--generalist", "nninteractive", "--model-dir", str(checkpoint), "--device", "cpu"]) == 2


def test_resume_continues_a_killed_training_from_its_last_epoch(partial, tmp_path):
    import torch

    run = tmp_path / "killed"
    assert main(["train", str(partial), "--out", str(run), "--method", "ipnp", "--profile", "tiny", "--epochs", "1",
                 "--iterations", "2", "--device", "cpu"]) == 0
    fold = next(run.rglob("fold_all"))
    # As if killed after epoch 1 of 2: nnU-Net had only written checkpoint_latest.
    (fold / "checkpoint_final.pth").rename(fold / "checkpoint_latest.pth")
    assert main(["train", str(partial), "--out", str(run), "--method", "ipnp", "--profile", "tiny", "--epochs", "2",
                 "--iterations", "2", "--device", "cpu", "--resume"]) == 0
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 2
    assert len(checkpoint["logging"]["train_losses"]) == 2  # epoch 1 was kept, not redone


def test_the_same_seed_trains_the_same_weights(partial, tmp_path):
    import torch

    def trained(name: str, seed: str) -> dict:
        run = tmp_path / name
        assert main(["train", str(partial), "--out", str(run), "--method", "marginal", "--profile", "tiny",
                     "--epochs", "1", "--iterations", "2", "--device", "cpu", "--seed", seed]) == 0
        assert json.loads((run / "specialist.json").read_text())["seed"] == int(seed)
        return torch.load(next(run.rglob("checkpoint_final.pth")), map_location="cpu", weights_only=False)["network_weights"]

    first, again, other = trained("a", "5"), trained("b", "5"), trained("c", "6")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)  # initialisation, patches and augmentation
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_a_two_stage_network_on_small_images_trains_finite_weights(dataset, tmp_path):
    """nnU-Net plans two stages for 8x12x14 images; its deep-supervision weights alone would be 0/0 there."""
    import torch

    run = tmp_path / "small"
    assert main(["train", str(dataset), "--out", str(run), "--method", "marginal", *FAST]) == 0
    plans = json.loads(next(run.rglob("nnUNetPlans.json")).read_text())
    assert plans["configurations"]["ipnp_tiny"]["architecture"]["arch_kwargs"]["n_stages"] == 2
    checkpoint = torch.load(next(run.rglob("checkpoint_final.pth")), map_location="cpu", weights_only=False)
    assert np.isfinite(checkpoint["logging"]["train_losses"]).all()
    assert all(torch.isfinite(w).all() for w in checkpoint["network_weights"].values() if w.is_floating_point())


def test_weights_that_go_nan_stop_training_with_one_line(dataset, tmp_path, monkeypatch, capsys):
    import torch

    from ipnp.specialist.trainers import nnUNetTrainer_ipnpMarginal

    real_step = nnUNetTrainer_ipnpMarginal.train_step

    def poisoned_step(self, batch):
        out = real_step(self, batch)
        with torch.no_grad():
            next(self.network.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(nnUNetTrainer_ipnpMarginal, "train_step", poisoned_step)
    run = tmp_path / "diverged"
    assert main(["train", str(dataset), "--out", str(run), "--method", "marginal", *FAST]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ipnp: error:")]
    assert len(errors) == 1 and "diverged in epoch 0" in errors[0], errors
    assert not list(run.rglob("checkpoint_*.pth"))  # nothing non-finite was saved
