"""nnInteractive generalists against the real nnInteractive 2.6 code: local session and a real CPU server.

The checkpoint (tests/nninteractive_checkpoint.py) echoes its positive-box channel, so a mask must equal
the union of the two boxes exactly where nnInteractive placed them: that pins down the axis order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import torch

from ipnp.generalist import GeneralistError
from ipnp.generalist import nninteractive as nni
from ipnp.generalist.nninteractive import NNInteractiveGeneralist, NNInteractiveRemoteGeneralist
from ipnp.pseudo.prompts import PromptPair, box_prompts
from nninteractive_checkpoint import build_checkpoint

SHAPE = (32, 64, 64)  # smaller than the 64^3 patch on z: nnInteractive pads it


def _image() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 100.0, SHAPE).astype(np.float32)


def _prompts(z: slice, y: slice, x: slice) -> PromptPair:
    mask = np.zeros(SHAPE, bool)
    mask[z, y, x] = True
    prompts = box_prompts(mask, padding=2)
    assert prompts is not None
    return prompts


# Two organs away from the image border, so that each box's 64^3 patch holds both boxes of its organ.
LIVER = _prompts(slice(10, 22), slice(20, 40), slice(18, 44))
SPLEEN = _prompts(slice(3, 9), slice(5, 15), slice(40, 55))


def _union_of_boxes(prompts: PromptPair) -> np.ndarray:
    expected = np.zeros(SHAPE, bool)
    for box in (prompts.axial, prompts.sagittal):
        expected[tuple(slice(lo, hi) for lo, hi in box.bounds)] = True
    return expected


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("nninteractive") / "nnInteractive_tiny")


# --- local session -----------------------------------------------------------------------------------


def test_local_boxes_reach_the_session_on_the_intended_axes(checkpoint, monkeypatch, capsys):
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    received = []
    real_add_bbox = nnInteractiveInferenceSession.add_bbox_interaction

    def spy(session, bbox_coords, include_interaction, *args, **kwargs):
        received.append((bbox_coords, include_interaction))
        return real_add_bbox(session, bbox_coords, include_interaction, *args, **kwargs)

    monkeypatch.setattr(nnInteractiveInferenceSession, "add_bbox_interaction", spy)
    with NNInteractiveGeneralist(checkpoint, device="cpu") as generalist:
        generalist.set_image(_image(), (3.0, 1.2, 1.5))
        time.sleep(0.2)  # the session preprocesses in a thread: its prints must not come after set_image
        liver = generalist.segment(LIVER)
        assert received == [(LIVER.axial.as_nninteractive(), True), (LIVER.sagittal.as_nninteractive(), True)]
        sizes = [[hi - lo for lo, hi in box] for box, _ in received]
        assert sizes[0][0] == 1 and min(sizes[0][1:]) > 1  # axial: one z slice
        assert sizes[1][2] == 1 and min(sizes[1][:2]) > 1  # sagittal: one x slice
        assert liver.shape == SHAPE and liver.dtype == bool
        np.testing.assert_array_equal(liver, _union_of_boxes(LIVER))

        # The next organ starts from scratch on the same image, and the first mask is not overwritten.
        spleen = generalist.segment(SPLEEN)
        np.testing.assert_array_equal(spleen, _union_of_boxes(SPLEEN))
        np.testing.assert_array_equal(liver, _union_of_boxes(LIVER))
    out = capsys.readouterr().out
    assert "session initialized" not in out and "Model license" not in out and "Initialize interactions" not in out


def test_local_keeps_the_thread_count(checkpoint):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with NNInteractiveGeneralist(checkpoint, device="cpu"):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_local_finds_weights_where_the_download_command_puts_them(checkpoint, tmp_path, monkeypatch):
    root = tmp_path / "nninteractive-root"
    (root / "models").mkdir(parents=True)
    os.symlink(checkpoint, root / "models" / nni.DEFAULT_MODEL_ID)
    monkeypatch.setenv("NNINTERACTIVE_MODEL_DIR", str(root))
    with NNInteractiveGeneralist(device="cpu") as generalist:
        generalist.set_image(_image(), (1.0, 1.0, 1.0))
        np.testing.assert_array_equal(generalist.segment(LIVER), _union_of_boxes(LIVER))


def test_local_loads_a_checkpoint_whose_trainer_lives_in_nnunet(tmp_path):
    # nnInteractive then falls back to nnU-Net's trainer search, which imports the Primus trainers.
    folder = build_checkpoint(tmp_path / "ckpt", trainer_name="nnUNetTrainerNoMirroring")
    with NNInteractiveGeneralist(folder, device="cpu") as generalist:
        generalist.set_image(_image(), (1.0, 1.0, 1.0))
        assert generalist.segment(LIVER).shape == SHAPE


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NNINTERACTIVE_MODEL_DIR", str(tmp_path))
    with pytest.raises(GeneralistError) as info:
        NNInteractiveGeneralist(device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "models" / "nnInteractive_v1.0") in message
    assert "nninteractive-download-model nnInteractive_v1.0" in message and "CC BY-NC-SA 4.0" in message


@pytest.mark.parametrize("removed", ["fold_0/checkpoint_final.pth", "plans.json", "dataset.json", "inference_info.json"])
def test_incomplete_weights_name_the_missing_file(checkpoint, tmp_path, removed):
    folder = Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))
    (folder / removed).unlink()
    with pytest.raises(GeneralistError) as info:
        NNInteractiveGeneralist(folder, device="cpu")
    message = str(info.value)
    assert "\n" not in message and removed in message and str(folder) in message
    assert "nninteractive-download-model" in message and "CC BY-NC-SA 4.0" in message


def test_all_zero_image_is_a_generalist_error(checkpoint):
    with NNInteractiveGeneralist(checkpoint, device="cpu") as generalist:
        with pytest.raises(GeneralistError, match="all-zero image"):
            generalist.set_image(np.zeros(SHAPE, np.float32), (1.0, 1.0, 1.0))


# --- remote: a real nninteractive-server on the loopback interface ---------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(checkpoint: Path, log_file: Path, api_key: str | None = None,
            device: str = "cpu") -> Iterator[tuple[str, subprocess.Popen]]:
    """``nninteractive-server`` on ``device`` with the test checkpoint; killed however the test ends."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "nnInteractive.inference.server.main", "--model-dir", str(checkpoint),
               "--fold", "0", "--device", device, "--host", "127.0.0.1", "--port", str(port),
               "--torch-n-threads", "1", "--no-torch-compile", "--log-level", "warning"]
    if api_key:
        command += ["--api-key", api_key]
    env = {k: v for k, v in os.environ.items() if k != "NN_INTERACTIVE_API_KEY"}
    with open(log_file, "wb") as log_handle:
        process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"server exited: {log_file.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"server not ready in 60 s: {log_file.read_text()[-2000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            time.sleep(0.25)
        yield url, process
    finally:
        process.kill()
        process.wait(timeout=10)


def test_remote_segments_retries_and_reconnects(checkpoint, tmp_path, monkeypatch, caplog):
    from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

    with _server(checkpoint, tmp_path / "server.log", api_key="test-key") as (url, _):
        with pytest.raises(GeneralistError, match=url):
            NNInteractiveRemoteGeneralist(url, api_key="wrong-key", connect_timeout_s=2.0)

        generalist = NNInteractiveRemoteGeneralist(url, api_key="test-key", backoff_s=0.01, connect_timeout_s=2.0,
                                                   read_timeout_s=30.0)
        try:
            generalist.set_image(_image(), (1.0, 1.0, 1.0))
            liver = generalist.segment(LIVER)
            assert liver.shape == SHAPE and liver.dtype == bool
            np.testing.assert_array_equal(liver, _union_of_boxes(LIVER))

            # A request failing mid-round: the whole round runs again and gives the same answer.
            real_add_bbox = nnInteractiveRemoteInferenceSession.add_bbox_interaction
            calls = []

            def flaky(session, bbox_coords, *args, **kwargs):
                calls.append(bbox_coords)
                if len(calls) == 2:
                    raise httpx.ReadTimeout("injected")
                return real_add_bbox(session, bbox_coords, *args, **kwargs)

            monkeypatch.setattr(nnInteractiveRemoteInferenceSession, "add_bbox_interaction", flaky)
            with caplog.at_level(logging.WARNING, logger=nni.__name__):
                spleen = generalist.segment(SPLEEN)
            assert len(calls) == 4 and sum("retrying" in r.message for r in caplog.records) == 1
            np.testing.assert_array_equal(spleen, _union_of_boxes(SPLEEN))
            monkeypatch.undo()

            # The server forgets the session (idle reaping, restart): a new one is opened, the image sent again.
            old = generalist._session
            httpx.post(f"{url}/release", headers={"Authorization": "Bearer test-key",
                                                  "X-Lease-Token": old._lease_token}, timeout=5.0)
            np.testing.assert_array_equal(generalist.segment(LIVER), _union_of_boxes(LIVER))
            assert generalist._session is not old
        finally:
            generalist.close()


def test_remote_server_dying_mid_case_is_a_generalist_error_after_retries(checkpoint, tmp_path, monkeypatch):
    delays: list[float] = []
    with _server(checkpoint, tmp_path / "server.log") as (url, process):
        generalist = NNInteractiveRemoteGeneralist(url, retries=3, backoff_s=0.5, connect_timeout_s=2.0)
        try:
            generalist.set_image(_image(), (1.0, 1.0, 1.0))
            process.kill()
            process.wait(timeout=10)
            monkeypatch.setattr(nni.time, "sleep", delays.append)
            with pytest.raises(GeneralistError, match=f"{url}.*after 4 tries"):
                generalist.segment(LIVER)
        finally:
            generalist.close()
    assert delays == [0.5, 1.0, 2.0]


def test_unreachable_server_fails_fast_naming_the_url():
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(GeneralistError, match=f"cannot open a session on the nnInteractive server at {url}"):
        NNInteractiveRemoteGeneralist(url, connect_timeout_s=2.0)
    assert time.monotonic() - start < 5.0
