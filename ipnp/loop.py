"""The IPnP loop end to end (paper §2.5): train, pseudo-label, continue training, export, predict, report.

One training schedule of ``epochs`` runs in segments. The first trains with the marginal loss; after each
segment a pseudo-labeling round completes the missing organs, and the next segment *continues* the same
optimisation (weights, optimizer state, learning-rate schedule) with the VLS loss on the ground truth plus
the latest accepted pseudo-labels::

    marginal [0, e1) -> round 1 -> ipnp [e1, e2) -> round 2 -> ... -> ipnp [en, epochs)

Every stage leaves a finished result on disk or nothing (nnU-Net checkpoints each epoch; rounds, exports,
predictions and evaluations are built under a hidden name and renamed), and whether a stage is done is
read from those results, so ``--resume`` after a crash at any point redoes at most the unfinished stage.

Run folder::

    RUN/config.yaml        effective configuration (plus the dataset's path)
    RUN/run.log            log of every stage
    RUN/timings.json       wall seconds per stage
    RUN/specialist/        the specialist (ipnp predict RUN/specialist ...)
    RUN/rounds/<k>/        pseudo-labels of round k (see ipnp.pseudo.round)
    RUN/completed/         the completed dataset: nnU-Net raw layout plus per-voxel source maps
    RUN/predictions/       the final specialist's predictions of imagesTs
    RUN/evaluation/        their scores, when labelsTs exist
    RUN/report.md, RUN/figures/
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import yaml

from ipnp.config import RunConfig, dump_config, parse_config
from ipnp.data.dataset import PartialDataset, read_label
from ipnp.data.io import atomic_path, copy_file, ensure_dir, refuse_output_inside, read_json, staged_dir, write_image, write_json
from ipnp.data.validate import require_valid
from ipnp.errors import IpnpError
from ipnp.generalist.base import Generalist
from ipnp.pseudo.round import PSEUDO_MANIFEST, STATUS_FILE, accepted_dice, round_dir, run_round

log = logging.getLogger(__name__)

CONFIG_FILE, LOG_FILE, LOCK_FILE, TIMINGS_FILE = "config.yaml", "run.log", ".lock", "timings.json"
SPECIALIST, COMPLETED, PREDICTIONS, EVALUATION = "specialist", "completed", "predictions", "evaluation"
SOURCE_UNKNOWN, SOURCE_GROUND_TRUTH, SOURCE_PSEUDO = 0, 1, 2


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder; a second concurrent run gets a clear error."""
    ensure_dir(run_dir)
    try:
        handle = open(run_dir / LOCK_FILE, "a")
    except OSError as exc:
        raise IpnpError(f"{run_dir}: cannot write the run folder ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IpnpError(f"{run_dir}: another ipnp process is running in this folder; wait for it or choose another") from None
        yield
    finally:
        handle.close()  # closing releases the lock, also when the process is killed


@contextlib.contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Copy the ``ipnp`` logger into ``RUN/run.log`` (appending, so resumed runs keep their history)."""
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("ipnp")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def _settle_config(run_dir: Path, dataset: Path, config: RunConfig, explicit: bool, resume: bool) -> tuple[RunConfig, bool]:
    """The configuration this run uses (the saved one on resume, else ``config``) and whether the run is new."""
    saved_path = run_dir / CONFIG_FILE
    if saved_path.is_file():
        if not resume:
            raise IpnpError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another folder")
        raw = yaml.safe_load(saved_path.read_text()) or {}
        saved_dataset = Path(raw.pop("dataset", ""))
        if saved_dataset.resolve() != dataset.resolve():
            raise IpnpError(f"{run_dir}: this run was started on {saved_dataset}, not {dataset}")
        saved = parse_config(raw, str(saved_path))
        if explicit and saved != config:
            raise IpnpError(f"{run_dir}: the given settings differ from the run's saved {CONFIG_FILE}; resume without them")
        return saved, False
    if any(p.name not in (LOCK_FILE, LOG_FILE) for p in run_dir.iterdir()):
        raise IpnpError(f"{run_dir}: not empty and not an ipnp run; choose another folder")
    return config, True


def _save_config(run_dir: Path, dataset: Path, config: RunConfig) -> None:
    with atomic_path(run_dir / CONFIG_FILE) as tmp:
        tmp.write_text(yaml.safe_dump({"dataset": str(dataset.absolute())}, sort_keys=False) + dump_config(config))


def _check_generalist(config: RunConfig) -> None:
    """Fail before training, not at the first round hours later, when the configured generalist cannot work."""
    g = config.generalist
    if g.name == "nninteractive":
        from ipnp.generalist.nninteractive import check_model_dir, default_model_dir

        check_model_dir(Path(g.model_dir).expanduser() if g.model_dir else default_model_dir())
    elif g.name == "nninteractive-remote":
        make_generalist_for(config).close()  # opens and releases a session: the server answers


class Timings:
    """Wall seconds per stage, kept in ``RUN/timings.json`` across resumed runs."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / TIMINGS_FILE
        self.seconds: dict[str, float] = read_json(self.path) if self.path.is_file() else {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage; an OS error in it (a full disk, a permission) becomes one line naming the stage.

        A stage that stops (an error, Ctrl-C) counts too: a resumed run keeps its finished epochs and rounds,
        so that time was spent on the run.
        """
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            with contextlib.suppress(OSError):  # the stage's own error is the one to report
                self._add(name, time.perf_counter() - start)
            if isinstance(exc, OSError):
                where = f" ({exc.filename})" if exc.filename else ""
                raise IpnpError(f"{self.path.parent}: {name} stopped: {exc.strerror or exc}{where}; the finished "
                                "stages are kept, resume once this is fixed") from exc
            raise
        self._add(name, time.perf_counter() - start)

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 2)
        write_json(self.seconds, self.path)


def run_ipnp(
    dataset: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    resume: bool = False,
    generalist: Generalist | None = None,
    first_segment: str | os.PathLike | None = None,
) -> dict:
    """Run IPnP on ``dataset`` into ``run_dir`` and return the run's summary (see :func:`summarize`).

    ``generalist`` replaces the one the configuration names: a Python user's own promptable model.
    ``first_segment``: the model folder of the training before round 1, shared with other runs of the same
    data and settings (``train_specialist``'s ``shared``).
    """
    dataset, run_dir = Path(dataset), Path(run_dir)
    ds = require_valid(dataset)
    refuse_output_inside(run_dir, ds.root)
    with run_lock(run_dir), run_log(run_dir):
        config, new = _settle_config(run_dir, ds.root, config or RunConfig(), config is not None, resume)
        if generalist is None and last_round(run_dir) < len(config.round_epochs()):
            _check_generalist(config)
        if new:  # saved only now, so that a run refused above can start again with other settings
            _save_config(run_dir, ds.root, config)
        log.info("IPnP on %s into %s (%s)", ds.root, run_dir, "new run" if new else "resumed")
        timings = Timings(run_dir)
        _train_with_rounds(ds, run_dir, config, timings, generalist, first_segment)
        with timings.stage("export"):
            export_completed(ds, run_dir)
        if ds.test_ids:
            with timings.stage("predict"):
                predict_tests(ds, run_dir, config)
            if (ds.root / "labelsTs").is_dir():
                with timings.stage("evaluate"):
                    evaluate_tests(ds, run_dir)
        from ipnp.report import write_report

        with timings.stage("report"):
            write_report(run_dir)
        return summarize(run_dir)


def _train_with_rounds(
    ds: PartialDataset, run_dir: Path, config: RunConfig, timings: Timings, generalist: Generalist | None,
    first_segment: str | os.PathLike | None,
) -> None:
    from ipnp.specialist.train import train_specialist

    round_epochs = config.round_epochs()
    total = config.total_epochs
    specialist_dir = run_dir / SPECIALIST
    previous_final = None
    for segment, until in enumerate(round_epochs + [total]):
        method = "marginal" if segment == 0 else ("ipnp" if config.vls else "ipnp-novls")
        labels = None if segment == 0 else round_dir(run_dir, segment) / "labels"
        with timings.stage(f"train {segment}"):
            model_dir = train_specialist(
                ds.root, specialist_dir, method, config.profile, labels_dir=labels, epochs=total,
                iterations=config.iterations_per_epoch, device=config.device, resume=True,
                until_epoch=until, init_checkpoint=previous_final, seed=config.seed,
                pseudo_positive_only=config.pseudo_positive_only, shared=first_segment if segment == 0 else None,
            )
        previous_final = model_dir / "fold_all" / "checkpoint_final.pth"
        k = segment + 1
        if k > len(round_epochs) or (round_dir(run_dir, k) / STATUS_FILE).is_file():
            continue
        if generalist is None:
            generalist = make_generalist_for(config)
        from ipnp.specialist.predict import Specialist

        log.info("round %d after epoch %d (entropy gate %s)", k, until, "on" if k >= config.rounds.gate_from_round else "off")
        with timings.stage(f"round {k}"):
            run_round(ds, Specialist(specialist_dir, device=config.device), generalist, run_dir, k, config.refine,
                      gate_active=k >= config.rounds.gate_from_round)


def make_generalist_for(config: RunConfig) -> Generalist:
    """The generalist a run configuration names, with its options and the prompts' padding."""
    from ipnp.generalist.registry import make_generalist

    g = config.generalist
    return make_generalist(g.name, model_dir=g.model_dir, server_url=g.server_url, device=g.device,
                           padding=config.refine.padding, retries=g.retries, read_timeout_s=g.read_timeout_s)


def last_round(run_dir: Path) -> int:
    """The highest finished round (0 when none)."""
    k = 0
    while (round_dir(run_dir, k + 1) / STATUS_FILE).is_file():
        k += 1
    return k


def source_map(ground_truth: np.ndarray, merged: np.ndarray, fully_labeled: bool) -> np.ndarray:
    """Per voxel: 1 ground truth, 2 pseudo-label, 0 unknown.

    Ground truth covers the voxels of labeled organs and, in a case whose every organ is labeled, the
    background. A background voxel of a partially labeled case may belong to a missing organ: unknown.
    """
    source = np.full(merged.shape, SOURCE_UNKNOWN, np.uint8)
    source[ground_truth > 0] = SOURCE_GROUND_TRUTH
    source[(ground_truth == 0) & (merged > 0)] = SOURCE_PSEUDO
    if fully_labeled:
        source[merged == 0] = SOURCE_GROUND_TRUTH
    return source


def export_completed(ds: PartialDataset, run_dir: Path) -> Path:
    """Write ``RUN/completed``: the dataset with the last round's labels, source maps and manifests."""
    out = run_dir / COMPLETED
    if out.is_dir():
        return out
    k = last_round(run_dir)
    pseudo = read_json(round_dir(run_dir, k) / "labels" / PSEUDO_MANIFEST) if k else {}
    ending = ds.file_ending
    with staged_dir(out, inputs=(ds.root,)) as tmp:
        for folder in ("imagesTr", "labelsTr", "sources"):
            (tmp / folder).mkdir()
        for case in ds.cases():
            for path in case.image_paths:
                copy_file(path, tmp / "imagesTr" / path.name)
            ground_truth, geometry = case.load_label()
            merged = read_label(round_dir(run_dir, k) / "labels" / f"{case.case_id}{ending}")[0] if k else ground_truth
            write_image(merged, geometry, tmp / "labelsTr" / f"{case.case_id}{ending}")
            write_image(source_map(ground_truth, merged, not case.unknown), geometry, tmp / "sources" / f"{case.case_id}{ending}")
        write_json({**ds.dataset_json, "numTraining": len(ds.training_ids),
                    "ipnp": {"completed_by": "ipnp run", "round": k, "sources": "0 unknown, 1 ground truth, 2 pseudo-label"}},
                   tmp / "dataset.json")
        write_json({c: sorted(ds.labeled_organs(c)) for c in ds.training_ids}, tmp / "partial_labels.json")
        write_json({c: pseudo.get(c, []) for c in ds.training_ids}, tmp / PSEUDO_MANIFEST)
    log.info("completed dataset (round %d) written to %s", k, out)
    return out


def predict_tests(ds: PartialDataset, run_dir: Path, config: RunConfig) -> None:
    from ipnp.specialist.predict import Specialist

    out = run_dir / PREDICTIONS
    if out.is_dir():
        return
    Specialist(run_dir / SPECIALIST, device=config.device).predict_folder(ds.root / "imagesTs", out)


def evaluate_tests(ds: PartialDataset, run_dir: Path) -> None:
    from ipnp.evaluation.evaluate import evaluate_folders

    out = run_dir / EVALUATION
    if (out / "summary.json").is_file():
        return
    manifest = ds.root / "partial_labels.json"
    with staged_dir(out, overwrite=True, inputs=(ds.root,)) as tmp:
        evaluate_folders(run_dir / PREDICTIONS, ds.root / "labelsTs", tmp,
                         manifest=manifest if manifest.is_file() else None, labels=ds.root / "dataset.json")


def summarize(run_dir: str | os.PathLike) -> dict:
    """What a finished (or partly finished) run holds: rounds and their counts, test scores, timings."""
    run_dir = Path(run_dir)
    rounds = []
    for k in range(1, last_round(run_dir) + 1):
        status = read_json(round_dir(run_dir, k) / STATUS_FILE)
        dice = [o["dice"] for c in status["cases"].values() for o in c["organs"].values() if o["pseudo_label"] and o["dice"] is not None]
        rounds.append({"round": k, **status["counts"], "pseudo_label_dice": float(np.mean(dice)) if dice else None,
                       "accepted_dice": list(means) if (means := accepted_dice(status)) else None})
    evaluation = run_dir / EVALUATION / "summary.json"
    scores = read_json(evaluation) if evaluation.is_file() else None
    timings = run_dir / TIMINGS_FILE
    return {
        "run_dir": str(run_dir),
        "rounds": rounds,
        "mean_dsc": scores["mean_dsc"] if scores else None,
        "mean_hd95": scores["mean_hd95"] if scores else None,
        "seconds": read_json(timings) if timings.is_file() else {},
    }


def summary_text(summary: dict) -> str:
    """The one-screen summary printed at the end of a run."""
    lines = [f"IPnP run {summary['run_dir']}"]
    for r in summary["rounds"]:
        dice = "" if r["pseudo_label_dice"] is None else f", pseudo-label Dice {r['pseudo_label_dice']:.3f}"
        if r["accepted_dice"]:
            dice += " (accepted: {:.3f}; the specialist's own masks of them {:.3f})".format(*r["accepted_dice"])
        lines.append(f"  round {r['round']}: {r['accepted']} accepted, {r['rejected']} rejected, {r['skipped']} skipped{dice}")
    if summary["mean_dsc"] is not None:
        hd = "n/a" if summary["mean_hd95"] is None else f"{summary['mean_hd95']:.2f} mm"
        lines.append(f"  test: mean DSC {summary['mean_dsc']:.4f}, mean HD95 {hd}")
    total = sum(summary["seconds"].values())
    lines.append(f"  wall time {total / 60:.1f} min; report {Path(summary['run_dir']) / 'report.md'}")
    return "\n".join(lines)
