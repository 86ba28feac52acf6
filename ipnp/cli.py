"""Command-line interface: ``ipnp <command> ...``. Thin: each command calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from ipnp.errors import IpnpError


def _cmd_synth(args: argparse.Namespace) -> int:
    from ipnp.data.synth import synthesize_dataset

    synthesize_dataset(args.out, n_train=args.cases, n_test=args.test_cases, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {args.cases} training and {args.test_cases} test phantoms to {args.out}")
    return 0


def _cmd_partial(args: argparse.Namespace) -> int:
    from ipnp.data.dataset import PartialDataset
    from ipnp.data.partial import simulate_partial_labels

    counts = simulate_partial_labels(args.src, args.out, keep=args.keep, seed=args.seed, overwrite=args.overwrite)
    ds = PartialDataset(args.out)
    print(f"wrote {args.out}: {len(ds.training_ids)} training cases, {args.keep:.0%} of present organs kept per case")
    print(f"{'id':>3}  {'organ':<24} labeled cases")
    for organ, n in counts.items():
        print(f"{organ:>3}  {ds.organ_names[organ]:<24} {n}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    if args.source == "amos":
        from ipnp.data.convert.amos import convert_amos

        convert_amos(args.src, args.out, overwrite=args.overwrite)
    else:
        from ipnp.data.convert.openkbp import convert_openkbp

        convert_openkbp(args.src, args.out, split=args.split, test_split=args.test_split, overwrite=args.overwrite)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ipnp.evaluation.evaluate import evaluate_folders, summary_markdown

    summary = evaluate_folders(args.pred, args.gt, args.out, manifest=args.manifest, labels=args.labels)
    print(summary_markdown(summary), end="")
    print(f"wrote per_case.csv, summary.json and summary.md to {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ipnp.specialist.train import train_specialist

    model = train_specialist(
        args.dataset, args.out, args.method, args.profile, labels_dir=args.labels, epochs=args.epochs,
        iterations=args.iterations, device=args.device, resume=args.resume,
    )
    print(f"trained {args.method} specialist: {model}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ipnp.specialist.predict import Specialist

    specialist = Specialist(args.run, device=args.device, mirroring=args.mirroring)
    specialist.predict_folder(args.images, args.out, probabilities=args.probabilities, overwrite=args.overwrite)
    print(f"wrote predictions to {args.out}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ipnp.data.validate import Severity, validate_dataset

    problems = validate_dataset(args.dataset)
    for problem in problems:
        print(problem)
    errors = sum(p.severity is Severity.ERROR for p in problems)
    warnings = len(problems) - errors
    print(f"{args.dataset}: {errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipnp",
        description="IPnP: iteratively prompting and pseudo-labeling for partially labeled 3D segmentation.",
    )
    parser.add_argument("--debug", action="store_true", help="print full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write synthetic abdominal CT phantoms with the 15 AMOS organs")
    p.add_argument("out", type=Path, help="output dataset folder")
    p.add_argument("--cases", type=int, default=20, help="training cases (default 20)")
    p.add_argument("--test-cases", type=int, default=10, help="test cases (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("partial", help="simulate partial labels from a fully labeled dataset")
    p.add_argument("src", type=Path, help="fully labeled dataset folder (read only)")
    p.add_argument("out", type=Path, help="output dataset folder")
    p.add_argument("--keep", type=float, default=0.67, help="fraction of present organs kept per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_partial)

    p = sub.add_parser("convert", help="convert a public dataset to ipnp's convention")
    p.add_argument("source", choices=["amos", "openkbp"])
    p.add_argument("src", type=Path, help="AMOS22 root, or an OpenKBP provided-data folder")
    p.add_argument("out", type=Path, help="output dataset folder")
    p.add_argument("--split", default="train-pats", help="OpenKBP split for training cases (default train-pats)")
    p.add_argument("--test-split", default=None, help="OpenKBP split for test cases, e.g. validation-pats")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("train", help="train a specialist (nnU-Net v2) with one of the paper's losses")
    p.add_argument("dataset", type=Path, help="dataset folder (read only)")
    p.add_argument("--out", type=Path, required=True, help="run folder for the model and nnU-Net's files")
    p.add_argument("--method", default="marginal", choices=["full-sup", "partial-sup", "marginal", "ipnp", "ipnp-novls"])
    p.add_argument("--profile", default="tiny", choices=["tiny", "quick", "default"])
    p.add_argument("--labels", type=Path, help="folder of label maps used instead of labelsTr (e.g. merged pseudo-labels)")
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    p.add_argument("--iterations", type=int, help="override the profile's iterations per epoch")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training in --out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict label maps (and probabilities) with a trained specialist")
    p.add_argument("run", type=Path, help="run folder written by 'ipnp train'")
    p.add_argument("images", type=Path, help="folder of <case>_0000.nii.gz images")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--probabilities", action="store_true", help="also write <case>.npz with float16 probabilities")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--mirroring", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time mirroring (default: on for the default profile, off for tiny and quick)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="score predicted label maps: per-organ DSC and HD95 (mm)")
    p.add_argument("pred", type=Path, help="folder of predicted label maps <case>.nii.gz (read only)")
    p.add_argument("gt", type=Path, help="folder of reference label maps, e.g. DATASET/labelsTs (read only)")
    p.add_argument("--out", type=Path, required=True, help="folder for per_case.csv, summary.json, summary.md")
    p.add_argument("--manifest", type=Path, help="partial_labels.json: score a listed case only on its listed organs")
    p.add_argument("--labels", type=Path, help="dataset.json naming the organs (default: in PRED, else beside GT)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("validate", help="check a dataset; exit 1 if it has errors")
    p.add_argument("dataset", type=Path)
    p.set_defaults(func=_cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("ipnp").setLevel(logging.DEBUG if args.debug else logging.INFO)
    try:
        return args.func(args)
    except IpnpError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ipnp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ipnp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
