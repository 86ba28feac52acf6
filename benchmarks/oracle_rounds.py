"""What would IPnP's rounds give with perfect pseudo-labels? The ceiling of the rounds at a benchmark's budget.

Starts from a benchmark's shared first segment (``BENCH/shared/``: the marginal-loss training up to the first
round, the specialist IPnP's rounds start from) and trains the rest of the schedule with every missing organ
of every training case labelled by its reference (the simulated dataset's ``labelsTr_full``), as if a perfect
generalist had been prompted on every organ and refinement had kept all of it. Then it predicts and scores the
test cases as the benchmark does, so the result pairs with the benchmark's ``marginal`` and ``ipnp`` columns
from the same specialist.

``--loss vls``: IPnP's own loss (``ipnp`` trainer: pseudo-labels as positive evidence, voxel-level selection),
the ceiling of IPnP with a perfect generalist; ``--loss novls``: the same without the selection (``ipnp-novls``
trainer). ``--loss full``: full supervision on the reference labels (``full-sup`` trainer), the ceiling of any
pseudo-labelling that arrives at the first round's epoch.

    python benchmarks/oracle_rounds.py BENCH --keep 0.33 --loss vls --out OUT

Resumes: a finished OUT is scored again from its predictions only if ``evaluation/`` is missing.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path


TRAINED_AS = {"vls": "ipnp", "novls": "ipnp-novls", "full": "full-sup"}  # --loss: the method trained


def oracle_labels(dataset, dest: Path) -> Path:
    """``dest`` with every training case's reference label and ``pseudo_labels.json`` naming the organs its
    partial label lacks (present in the reference), as the loop's merged round labels are laid out."""
    import numpy as np

    from ipnp.data.io import copy_file, staged_dir, write_json

    if dest.is_dir():
        return dest
    with staged_dir(dest) as tmp:
        manifest = {}
        for case_id in dataset.training_ids:
            case = dataset.case(case_id)
            reference, _ = case.load_full_label()
            present = {int(o) for o in np.unique(reference) if o}
            manifest[case_id] = sorted(present - set(dataset.labeled_organs(case_id)))
            copy_file(case.full_label_path, tmp / case.label_path.name)
        write_json(manifest, tmp / "pseudo_labels.json")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a benchmark folder whose shared first segment exists")
    parser.add_argument("--keep", required=True, help="the ratio, as in the benchmark's data/keep<R> (e.g. 0.33)")
    parser.add_argument("--loss", choices=tuple(TRAINED_AS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    os.environ.setdefault("nnUNet_compile", "f")
    import yaml

    from ipnp.benchmark import CONFIG_FILE, SETTINGS_FILE, Column, first_segment_store
    from ipnp.config import parse_config
    from ipnp.data.dataset import PartialDataset
    from ipnp.data.io import read_json
    from ipnp.loop import evaluate_tests, predict_tests, SPECIALIST
    from ipnp.specialist.train import train_specialist

    settings = read_json(args.bench / SETTINGS_FILE)
    seed = settings["seed"]
    config = parse_config(yaml.safe_load((args.bench / CONFIG_FILE).read_text()), str(args.bench / CONFIG_FILE))
    config = replace(config, device=args.device, seed=seed)
    column = Column("marginal", float(args.keep))
    store = first_segment_store(args.bench, column, config)
    start = store / "fold_all" / "checkpoint_final.pth"
    if not start.is_file():
        raise SystemExit(f"{store}: no shared first segment; run the benchmark's ipnp or marginal column first")
    dataset = PartialDataset(args.bench / "data" / column.tag)
    args.out.mkdir(parents=True, exist_ok=True)
    labels = oracle_labels(dataset, args.out / "oracle_labels")
    method = TRAINED_AS[args.loss]
    data, labels_dir = (dataset.root, labels) if method != "full-sup" else (
        Path(settings["dataset"]), None)
    train_specialist(data, args.out / SPECIALIST, method, config.profile, labels_dir=labels_dir,
                     epochs=config.total_epochs, iterations=config.iterations_per_epoch, device=args.device,
                     resume=True, init_checkpoint=start, seed=seed)
    predict_tests(dataset, args.out, config)
    evaluate_tests(dataset, args.out)
    summary = read_json(args.out / "evaluation" / "summary.json")
    print(f"{args.out}: mean DSC {100 * summary['mean_dsc']:.2f} (oracle pseudo-labels from epoch "
          f"{config.round_epochs()[0]} of {config.total_epochs}, loss {args.loss}, seed {seed})")


if __name__ == "__main__":
    main()
