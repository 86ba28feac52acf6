"""The timing scripts in benchmarks/ run, on sizes small enough for the suite; their numbers are not checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

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


def test_over_segmentation_counts_a_dilated_organ_as_near_false_positives(tmp_path):
    import numpy as np
    from scipy import ndimage

    from conftest import SPACING, make_dataset, write_volume
    from ipnp.data import PartialDataset

    ds = PartialDataset(make_dataset(tmp_path / "ds", n_train=2, n_test=2, shape=(10, 14, 16), seed=1))
    predictions = tmp_path / "pred"
    expected = []
    for case_id in ds.test_ids:
        reference, _ = ds.case(case_id, "test").load_label()
        grown = ndimage.binary_dilation(reference == 1) & (reference == 0)
        predicted = np.where(grown, 1, reference).astype(np.uint8)
        write_volume(predicted, predictions / f"{case_id}.nii.gz")
        expected.append(((reference == 1).sum(), grown.sum()))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "over_segmentation.py"), str(ds.root), str(predictions),
                           "--organs", "1", "2", "--near", str(2 * max(SPACING))],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[1]: line.split()[2:] for line in done.stdout.splitlines()[1:]}
    truth, wrong = (np.array(v) for v in zip(*expected))
    n, dice, precision, recall, volume, near, far = rows[ds.organ_names[1]]
    assert int(n) == 2 and float(recall) == 1.0 and int(near) == wrong.sum() and int(far) == 0
    assert float(dice) == round(100 * np.mean(2 * truth / (2 * truth + wrong)), 2)
    assert float(precision) == round(truth.sum() / (truth + wrong).sum(), 3) < 1
    assert float(volume) == round((truth + wrong).sum() / truth.sum(), 2) > 1
    assert rows[ds.organ_names[2]][1:] == ["100.00", "1.000", "1.000", "1.00", "0", "0"]  # predicted as it is
    gone = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "over_segmentation.py"), str(ds.root), str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert gone.returncode == 1 and gone.stderr.strip().count("\n") == 0 and "file not found" in gone.stderr


def test_oracle_labels_give_every_missing_organ_its_reference_as_a_pseudo_label(tmp_path):
    import importlib.util

    from conftest import tree_digest
    from ipnp.data import PartialDataset
    from ipnp.data.io import read_image
    from ipnp.specialist.train import read_pseudo_manifest
    from test_loop import make_partial_phantoms

    spec = importlib.util.spec_from_file_location("oracle_rounds", ROOT / "benchmarks" / "oracle_rounds.py")
    oracle_rounds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle_rounds)
    ds = PartialDataset(make_partial_phantoms(tmp_path, n_train=6, n_test=1))
    before = tree_digest(ds.root)
    labels = oracle_rounds.oracle_labels(ds, tmp_path / "oracle")
    manifest = read_pseudo_manifest(labels)
    assert sorted(manifest) == ds.training_ids
    for case_id in ds.training_ids:
        case = ds.case(case_id)
        reference, _ = case.load_full_label()
        written, _ = read_image(labels / case.label_path.name)
        assert (written == reference).all()
        missing = set(np.unique(reference).tolist()) - {0} - set(ds.labeled_organs(case_id))
        assert manifest[case_id] == sorted(missing) and missing  # 33 % kept: every case lacks organs
    assert tree_digest(ds.root) == before
