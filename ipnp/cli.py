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

    p = sub.add_parser("validate", help="check a dataset; exit 1 if it has errors")
    p.add_argument("dataset", type=Path)
    p.set_defaults(func=_cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s: %(message)s")
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
