"""Why are a run's pseudo-labels good or bad? Per unknown organ of a few training cases: the final
specialist's Dice, the pseudo-label's Dice (both against ``labelsTr_full``), and their voxel counts.

    python benchmarks/pseudo_label_diagnosis.py RUN [--round K] [--cases 4]

With ``--components`` it instead pseudo-labels those cases anew with the final specialist and the run's
generalist (no entropy gate), once with prompts from the largest component of the specialist's mask and
once from the whole mask (the paper's rule), and prints both pseudo-labels' Dice per organ.

With ``--landing`` it reads round K's labels of every training case (no prediction) and prints, per
pseudo-labeled organ, which organs of ``labelsTr_full`` its voxels lie on: its precision, and what the
rest teaches the specialist wrongly.

With ``--reach ORGAN [ORGAN ...]`` it predicts the first cases with the run's specialist (or ``--specialist
DIR``, e.g. a copy of ``RUN/specialist`` taken while round 1 ran) and prints, per organ, the largest
probability the specialist gives it and how many voxels reach τ: an organ that never reaches τ cannot keep
a pseudo-label voxel, whatever the prompts and the generalist do.

With ``--trace ORGAN`` it follows one organ through every round (no prediction): per case that lacks it,
each round's status, voxels and Dice, and how far the carried pseudo-label's centre lies from the organ's
centre in ``labelsTr_full`` (mm). A pseudo-label in the wrong place (Dice 0, centre far off) that later
rounds grow shows the specialist learning its own mistake.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from ipnp.data import PartialDataset
from ipnp.data.dataset import read_label
from ipnp.data.io import read_json
from ipnp.evaluation.metrics import dice
from ipnp.loop import SPECIALIST, last_round
from ipnp.pseudo.placement import placement
from ipnp.pseudo.round import STATUS_FILE, round_dir
from ipnp.specialist.predict import Specialist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--round", type=int, help="default: the last finished round")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--components", action="store_true",
                        help="compare prompts from the largest component with prompts from the whole mask")
    parser.add_argument("--landing", action="store_true",
                        help="per organ, the full-label organs its pseudo-labelled voxels lie on (all cases)")
    parser.add_argument("--reach", type=int, nargs="+", metavar="ORGAN",
                        help="per case, the specialist's largest probability for these organs and voxels >= tau")
    parser.add_argument("--trace", type=int, metavar="ORGAN",
                        help="per case lacking ORGAN, its status, voxels, Dice and centre offset (mm) in every round")
    parser.add_argument("--specialist", type=Path, help="with --reach: this specialist folder instead of RUN/specialist")
    args = parser.parse_args()
    if args.reach:
        reach(args.run, args.specialist or args.run / SPECIALIST, args.reach, args.cases)
        return
    if args.landing:
        landing(args.run, args.round or last_round(args.run))
        return
    if args.trace:
        trace(args.run, args.trace)
        return
    if args.components:
        compare_components(args.run, args.cases)
        return
    k = args.round or last_round(args.run)
    dataset = PartialDataset(yaml.safe_load((args.run / "config.yaml").read_text())["dataset"])
    specialist = Specialist(args.run / SPECIALIST, device="cpu")
    status = read_json(round_dir(args.run, k) / STATUS_FILE)["cases"]
    print("case organ status specialist_dice pseudo_dice pseudo_voxels full_voxels")
    for case_id in dataset.training_ids[: args.cases]:
        case = dataset.case(case_id)
        image, geometry = case.load_image()
        full, _ = case.load_full_label()
        predicted, _ = specialist.predict(image, geometry)
        pseudo, _ = read_label(round_dir(args.run, k) / "labels" / f"{case_id}{dataset.file_ending}")
        for organ in sorted(case.unknown):
            reference = full == organ
            if reference.any():
                print(case_id, organ, status[case_id]["organs"].get(str(organ), {}).get("status", "-"),
                      f"{dice(predicted == organ, reference):.2f}", f"{dice(pseudo == organ, reference):.2f}",
                      int(np.count_nonzero(pseudo == organ)), int(np.count_nonzero(reference)))


def compare_components(run: Path, n_cases: int) -> None:
    from ipnp.config import parse_config
    from ipnp.loop import make_generalist_for
    from ipnp.pseudo.round import RoundCase, pseudo_label_case

    raw = yaml.safe_load((run / "config.yaml").read_text())
    dataset = PartialDataset(raw.pop("dataset"))
    config = parse_config(raw)
    specialist = Specialist(run / SPECIALIST, device="cpu")
    generalist = make_generalist_for(config)
    print("case organ specialist_dice dice_largest_component dice_whole_mask")
    for case_id in dataset.training_ids[:n_cases]:
        case = dataset.case(case_id)
        image, geometry = case.load_image()
        label, _ = case.load_label()
        full, _ = case.load_full_label()
        predicted, probs = specialist.predict(image, geometry)
        outcomes = [
            pseudo_label_case(RoundCase(case_id, case.unknown, geometry, label, full_label=full, image=image,
                                        predicted=predicted, probs=probs),
                              generalist, replace(config.refine, largest_component=largest), gate_active=False)[1].organs
            for largest in (True, False)
        ]
        for organ in sorted(case.unknown):
            if (full == organ).any():
                print(case_id, organ, f"{dice(predicted == organ, full == organ):.2f}",
                      *(f"{o[organ].dice or 0.0:.2f}" for o in outcomes))


def reach(run: Path, specialist_dir: Path, organs: list[int], n_cases: int) -> None:
    from ipnp.config import parse_config

    raw = yaml.safe_load((run / "config.yaml").read_text())
    dataset = PartialDataset(raw.pop("dataset"))
    tau = parse_config(raw).refine.tau
    specialist = Specialist(specialist_dir, device="cpu")
    print(f"case organ unknown_in_case max_probability voxels_at_least_tau({tau}) argmax_voxels reference_voxels")
    for case_id in dataset.training_ids[:n_cases]:
        case = dataset.case(case_id)
        image, geometry = case.load_image()
        label, _ = case.load_label()
        predicted, probs = specialist.predict(image, geometry)
        for organ in organs:
            p = np.asarray(probs[organ], dtype=np.float32)
            print(case_id, organ, organ in case.unknown, f"{p.max():.2f}", int((p >= tau).sum()),
                  int((predicted == organ).sum()), int((label == organ).sum()))


def landing(run: Path, k: int) -> None:
    from collections import Counter, defaultdict

    dataset = PartialDataset(yaml.safe_load((run / "config.yaml").read_text())["dataset"])
    labels = round_dir(run, k) / "labels"
    on: dict[int, Counter] = defaultdict(Counter)
    for case_id, organs in read_json(labels / "pseudo_labels.json").items():
        merged, _ = read_label(labels / f"{case_id}{dataset.file_ending}")
        full, _ = dataset.case(case_id).load_full_label()
        for organ in organs:
            values, counts = np.unique(full[merged == organ], return_counts=True)
            on[organ].update(dict(zip(values.tolist(), counts.tolist())))
    print(f"round {k}: organ pseudo_voxels precision  full-label organs under them (share)")
    for organ, counter in sorted(on.items()):
        total = sum(counter.values())
        shares = " ".join(f"{o}:{n / total:.2f}" for o, n in counter.most_common(4))
        print(organ, total, f"{counter[organ] / total:.2f}", shares)


def trace(run: Path, organ: int) -> None:
    dataset = PartialDataset(yaml.safe_load((run / "config.yaml").read_text())["dataset"])
    rounds = range(1, last_round(run) + 1)
    status = {k: read_json(round_dir(run, k) / STATUS_FILE)["cases"] for k in rounds}
    print(f"organ {organ}, per round: status voxels dice centre_offset_mm (of the pseudo-label carried after it)")
    for case_id in dataset.training_ids:
        case = dataset.case(case_id)
        if organ not in case.unknown:
            continue
        full, geometry = case.load_full_label()
        cells = []
        for k in rounds:
            entry = status[k].get(case_id, {}).get("organs", {}).get(str(organ), {})
            merged, _ = read_label(round_dir(run, k) / "labels" / f"{case_id}{dataset.file_ending}")
            carried = merged == organ
            cells.append(f"{entry.get('status', '-')[:3]} {int(carried.sum())} "
                         f"{dice(carried, full == organ):.2f} {_centre_offset(carried, full == organ, geometry)}")
        print(case_id, " | ".join(cells))


def _centre_offset(mask: np.ndarray, reference: np.ndarray, geometry) -> str:
    """Distance between the two masks' centres in mm ("-" when either is empty)."""
    found, truth = placement(mask, geometry), placement(reference, geometry)
    return "-" if found is None or truth is None else f"{float(np.linalg.norm(found.centre - truth.centre)):.0f}"


if __name__ == "__main__":
    main()
