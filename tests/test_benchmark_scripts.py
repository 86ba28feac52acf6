"""The timing scripts in benchmarks/ run, on sizes small enough for the suite; their numbers are not checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_loss_overhead_times_every_loss_and_its_reductions_agree():
    # The script itself asserts that the matrix products and the multiply-and-sum reductions give the same loss.
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "loss_overhead.py"), "--device", "cpu", "--shape", "2", "5", "6", "7", "8",
         "--steps", "2", "--warmup", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {m[1].strip(): (float(m[2]), float(m[3])) for m in re.finditer(r"^(\S.*?)\s+([\d.]+)\s+([\d.]+)$", done.stdout, re.M)}
    expected = {"stock DC_and_CE_loss"} | {f"{loss}, {form}" for loss in ("marginal", "ipnp-novls", "ipnp (VLS)")
                                           for form in ("matmul", "mul-sum")}
    assert set(rows) == expected, done.stdout
    assert rows["stock DC_and_CE_loss"][1] == 1.0
    assert all(ms > 0 for ms, _ in rows.values())
