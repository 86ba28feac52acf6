"""The CUDA paths: nnInteractive's local session and server on the GPU, and the specialist trained and
used for prediction there. Skipped where no CUDA device is visible (CI); run on a GPU machine with

    python -m pytest -q tests/test_cuda.py
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ipnp.cli import main
from ipnp.data import PartialDataset
from ipnp.data.partial import simulate_partial_labels
from ipnp.data.synth import synthesize_dataset
from ipnp.generalist.nninteractive import NNInteractiveGeneralist, NNInteractiveRemoteGeneralist
from conftest import full_labels_as_pseudo
from nninteractive_checkpoint import build_checkpoint
from test_generalist_nninteractive import LIVER, SHAPE, SPLEEN, _image, _server, _union_of_boxes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("nninteractive") / "nnInteractive_tiny")


def test_local_session_on_cuda_places_both_boxes(checkpoint):
    with NNInteractiveGeneralist(checkpoint, device="cuda") as generalist:
        assert generalist._session.device.type == "cuda"
        generalist.set_image(_image(), (3.0, 1.2, 1.5))
        for prompts in (LIVER, SPLEEN):
            mask = generalist.segment(prompts)
            assert mask.shape == SHAPE and mask.dtype == bool
            np.testing.assert_array_equal(mask, _union_of_boxes(prompts))


def test_server_on_cuda_answers_the_remote_generalist(checkpoint, tmp_path):
    with _server(checkpoint, tmp_path / "server.log", api_key="gpu-key", device="cuda") as (url, _):
        generalist = NNInteractiveRemoteGeneralist(url, api_key="gpu-key", connect_timeout_s=5.0, read_timeout_s=60.0)
        try:
            generalist.set_image(_image(), (1.0, 1.0, 1.0))
            np.testing.assert_array_equal(generalist.segment(LIVER), _union_of_boxes(LIVER))
        finally:
            generalist.close()


def test_vls_specialist_trains_and_predicts_on_cuda(tmp_path):
    """The VLS loss under nnU-Net's CUDA autocast, with pseudo-labelled organs in every case."""
    partial, labels = tmp_path / "partial", tmp_path / "merged"
    synthesize_dataset(tmp_path / "full", n_train=8, n_test=2, seed=0)
    simulate_partial_labels(tmp_path / "full", partial, keep=0.67, seed=0)
    full_labels_as_pseudo(partial, labels)
    run, pred = tmp_path / "run", tmp_path / "pred"
    fast = ["--profile", "tiny", "--epochs", "2", "--iterations", "4", "--device", "cuda"]
    assert main(["train", str(partial), "--out", str(run), "--method", "ipnp", "--labels", str(labels), *fast]) == 0
    record = json.loads((run / "specialist.json").read_text())
    assert record["device"].startswith("cuda") and record["trainer"] == "nnUNetTrainer_ipnpVLS"
    log = next((run / record["model_dir"] / "fold_all").glob("training_log_*.txt")).read_text()
    assert "train_loss nan" not in log and "train_loss" in log
    assert main(["predict", str(run), str(partial / "imagesTs"), str(pred), "--probabilities",
                 "--device", "cuda"]) == 0
    for case in PartialDataset(partial).test_ids:
        probabilities = np.load(pred / f"{case}.npz")["probabilities"].astype(np.float32)
        assert probabilities.shape[0] == 16 and np.isfinite(probabilities).all()
        np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=5e-3)
