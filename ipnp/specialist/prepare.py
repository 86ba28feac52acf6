"""nnU-Net planning and preprocessing of an ipnp dataset inside a run folder.

The input dataset is never written: the run gets its own nnU-Net raw dataset whose files are symbolic
links to the input images and to the labels in use (``labelsTr``, or a folder of merged pseudo-labels).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ipnp.data.dataset import LABELS_TR, PartialDataset
from ipnp.data.io import read_json, write_json
from ipnp.errors import IpnpError
from ipnp.console import stdout_to_log
from ipnp.specialist.profiles import Profile, add_profile_configuration

log = logging.getLogger(__name__)

DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID:03d}_ipnp"
PLANS = "nnUNetPlans"


@dataclass(frozen=True)
class Prepared:
    """Where nnU-Net finds a prepared dataset, and the configuration the profile trains."""

    raw: Path
    preprocessed: Path
    configuration: str


def label_status(dataset: PartialDataset, pseudo: dict[str, list[int]] | None = None) -> dict[str, dict[str, list[int]]]:
    """Per training case: the organs with ground truth, and those with an accepted pseudo-label."""
    pseudo = pseudo or {}
    status = {}
    for case_id in dataset.training_ids:
        labeled = sorted(dataset.labeled_organs(case_id))
        status[case_id] = {"labeled": labeled, "pseudo": sorted(set(pseudo.get(case_id, [])) - set(labeled))}
    return status


def _link(target: Path, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target.absolute(), tmp)
    os.replace(tmp, link)


def write_raw_dataset(dataset: PartialDataset, raw_root: Path, labels_dir: Path | None = None) -> Path:
    """Make (or refresh) the run's nnU-Net raw dataset: links to the images and to the labels in use."""
    labels_dir = Path(labels_dir) if labels_dir is not None else dataset.root / LABELS_TR
    target = raw_root / DATASET_NAME
    (target / "imagesTr").mkdir(parents=True, exist_ok=True)
    (target / "labelsTr").mkdir(parents=True, exist_ok=True)
    meta = read_json(dataset.root / "dataset.json")
    meta["numTraining"] = len(dataset.training_ids)
    meta.pop("dataset", None)
    write_json(meta, target / "dataset.json")
    for case_id in dataset.training_ids:
        for image in dataset.image_paths(case_id):
            _link(image, target / "imagesTr" / image.name)
        label = labels_dir / f"{case_id}{dataset.file_ending}"
        if not label.is_file():
            raise IpnpError(f"{label}: label file is missing")
        _link(label, target / "labelsTr" / label.name)
    return target


def prepare(
    dataset: PartialDataset,
    folders: dict[str, Path],
    profile: Profile,
    *,
    labels_dir: Path | None = None,
    pseudo: dict[str, list[int]] | None = None,
    num_processes: int = 1,
    plans_of: Path | None = None,
) -> Prepared:
    """Plan (once) and preprocess the dataset for nnU-Net, and record each case's organ status.

    Preprocessing runs again on every call, because the labels may have changed (a new pseudo-label round).

    ``plans_of`` is the model folder that training continues from: its plans replace any others. nnU-Net's
    CT normalisation takes its statistics from the voxels under the labels, so planning again on labels with
    pseudo-labels would normalise the images differently from the ones the model learned on.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    raw = write_raw_dataset(dataset, folders["nnUNet_raw"], labels_dir)
    preprocessed = folders["nnUNet_preprocessed"] / DATASET_NAME
    plans_file = preprocessed / f"{PLANS}.json"
    if plans_of is not None:
        preprocessed.mkdir(parents=True, exist_ok=True)
        for source, target in ((Path(plans_of) / "plans.json", plans_file),
                               (Path(plans_of) / "dataset_fingerprint.json", preprocessed / "dataset_fingerprint.json"),
                               (raw / "dataset.json", preprocessed / "dataset.json")):
            write_json(read_json(source), target)
    elif not plans_file.is_file():
        # nnU-Net's planner crashes with nnUNet_n_proc_DA=0 (torch.set_num_threads(0)).
        saved = os.environ.get("nnUNet_n_proc_DA")
        os.environ["nnUNet_n_proc_DA"] = "1"
        try:
            with stdout_to_log("nnU-Net"):
                extract_fingerprints([DATASET_ID], num_processes=num_processes, check_dataset_integrity=False, verbose=False, show_progress_bar=False)
                plan_experiments([DATASET_ID])
        finally:
            if saved is None:
                os.environ.pop("nnUNet_n_proc_DA", None)
            else:
                os.environ["nnUNet_n_proc_DA"] = saved
    plans = json.loads(plans_file.read_text())
    configuration = add_profile_configuration(plans, profile)
    write_json(plans, plans_file)
    with stdout_to_log("nnU-Net"):
        preprocess([DATASET_ID], PLANS, configurations=["3d_fullres"], num_processes=[num_processes], verbose=False, show_progress_bar=sys.stderr.isatty())
    from ipnp.specialist.trainers import STATUS_FILE

    write_json(label_status(dataset, pseudo), preprocessed / STATUS_FILE)
    return Prepared(raw=raw, preprocessed=preprocessed, configuration=configuration)
