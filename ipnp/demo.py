"""``ipnp demo``: the whole method on a laptop CPU in minutes, with nothing to download.

Phantoms (``ipnp synth``) -> 33 % of the organs kept per case (``ipnp partial``) -> IPnP with the
classical generalist on the ``quick`` profile -> report. Every step is skipped when its output already
exists, and the run resumes, so running the demo again after an interruption finishes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ipnp.config import GeneralistConfig, RunConfig
from ipnp.data.io import ensure_dir
from ipnp.loop import CONFIG_FILE, run_ipnp

DEMO_TRAIN_CASES, DEMO_TEST_CASES, DEMO_KEEP, DEMO_SEED = 20, 10, 0.33, 0
# 16 of quick's 20 epochs keep the whole demo within 15 minutes on 2 CPU cores (docs/run.md has the timing).
DEMO_CONFIG = RunConfig(profile="quick", epochs=16, device="cpu", generalist=GeneralistConfig(name="classical"))


def run_demo(out: str | os.PathLike = "ipnp-demo", *, device: str | None = None) -> dict:
    """Build the demo's data under ``out`` and run IPnP on it; return the run's summary."""
    from dataclasses import replace

    from ipnp.data.partial import simulate_partial_labels
    from ipnp.data.synth import synthesize_dataset

    out = ensure_dir(Path(out))
    phantoms, partial, run_dir = out / "phantoms", out / "phantoms-33", out / "run"
    if not phantoms.is_dir():
        synthesize_dataset(phantoms, n_train=DEMO_TRAIN_CASES, n_test=DEMO_TEST_CASES, seed=DEMO_SEED)
    if not partial.is_dir():
        simulate_partial_labels(phantoms, partial, keep=DEMO_KEEP, seed=DEMO_SEED)
    if (run_dir / CONFIG_FILE).is_file():
        return run_ipnp(partial, run_dir, resume=True)  # with the settings it started with
    return run_ipnp(partial, run_dir, DEMO_CONFIG if device is None else replace(DEMO_CONFIG, device=device))
