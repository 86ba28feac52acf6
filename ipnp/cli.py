"""Command-line interface: ``ipnp <command> ...``. Thin: each command calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from ipnp.device import check_device
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
        iterations=args.iterations, device=args.device, resume=args.resume, seed=args.seed,
    )
    print(f"trained {args.method} specialist: {model}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ipnp.specialist.predict import Specialist

    specialist = Specialist(args.run, device=args.device, mirroring=args.mirroring)
    specialist.predict_folder(args.images, args.out, probabilities=args.probabilities, overwrite=args.overwrite)
    print(f"wrote predictions to {args.out}")
    return 0


def _generalist(args: argparse.Namespace):
    from ipnp.generalist.registry import make_generalist

    return make_generalist(args.generalist, model_dir=args.model_dir, server_url=args.server_url, device=args.device,
                           padding=args.padding)


def _cmd_pseudo_label(args: argparse.Namespace) -> int:
    from ipnp.data.validate import require_valid
    from ipnp.pseudo.refine import RefineSettings
    from ipnp.pseudo.round import run_round
    from ipnp.specialist.predict import Specialist

    dataset = require_valid(args.dataset)
    specialist = Specialist(args.model, device=args.device)
    checks = {} if args.position_check is None else {"position_check": args.position_check}
    for name in ("max_entropy", "trust_cases", "trust_precision"):
        if getattr(args, name) is not None:
            checks[name] = getattr(args, name)
    with _generalist(args) as generalist:
        folder = run_round(dataset, specialist, generalist, args.out, args.round,
                           RefineSettings(padding=args.padding, tau=args.tau, delta=args.delta,
                                          largest_component=not args.all_components, **checks),
                           gate_active=args.entropy_gate, cases=args.cases)
    print(f"wrote round {args.round} to {folder}")
    return 0


def _cmd_generalist_eval(args: argparse.Namespace) -> int:
    from ipnp.generalist.evaluate import evaluate_generalist

    with _generalist(args) as generalist:
        summary = evaluate_generalist(args.dataset, generalist, args.out, cases=args.cases, split=args.split,
                                      padding=args.padding)
    print(f"mean Dice {summary['mean_dice']:.4f}, {summary['seconds_per_organ']:.2f} s per organ; wrote {args.out}")
    return 0


def _add_device_option(p: argparse.ArgumentParser, default: str = "cuda if available") -> None:
    p.add_argument("--device", help=f"cpu, cuda or cuda:N (default: {default})")


def _add_generalist_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generalist", default="classical", help="classical (default), nninteractive or nninteractive-remote")
    p.add_argument("--model-dir", help="nnInteractive model folder (default: $NNINTERACTIVE_MODEL_DIR/models/nnInteractive_v1.0)")
    p.add_argument("--server-url", help="nninteractive-server URL, for nninteractive-remote (API key: $NN_INTERACTIVE_API_KEY)")
    _add_device_option(p)


def _cmd_run(args: argparse.Namespace) -> int:
    from ipnp.config import load_config
    from ipnp.loop import run_ipnp, summary_text

    overrides = {"profile": args.profile, "epochs": args.epochs, "iterations_per_epoch": args.iterations,
                 "device": args.device, "vls": args.vls, "generalist.name": args.generalist,
                 "generalist.model_dir": args.model_dir, "generalist.server_url": args.server_url,
                 "seed": args.seed}
    # Without settings, a resumed run takes its saved config and a new one the defaults.
    explicit = args.config is not None or any(v is not None for v in overrides.values())
    config = load_config(args.config, **overrides) if explicit else None
    summary = run_ipnp(args.dataset, args.out, config, resume=args.resume)
    print(summary_text(summary))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ipnp.demo import run_demo
    from ipnp.loop import summary_text

    print(summary_text(run_demo(args.out, device=args.device)))
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from ipnp.benchmark import default_methods, run_benchmark
    from ipnp.config import RunConfig, load_config

    config = load_config(args.config) if args.config is not None else None
    settings = dict(
        keep=args.keep, methods=args.methods or default_methods(args.keep is not None),
        profile=args.profile or (config or RunConfig()).profile, epochs=args.epochs, iterations=args.iterations,
        device=args.device, config=config, share_from=args.share_from,
    )
    if len(args.seed) == 1:
        table = run_benchmark(args.dataset, args.out, seed=args.seed[0], **settings)
        print(table.read_text(), end="")
        print(f"wrote {table}, table.csv and results.json")
        return 0
    from ipnp.benchmark_seeds import run_seeds

    summary = run_seeds(args.dataset, args.out, args.seed, **settings)
    print(summary.read_text(), end="")
    print(f"wrote {summary}, seeds.csv, seeds.json, seeds.png and one benchmark per seed in {args.out}/seed<S>/")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ipnp.report import write_report

    print(f"wrote {write_report(args.run)}")
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
    p.add_argument("--method", default="marginal", help="full-sup, partial-sup, marginal (default), ipnp, ipnp-novls, dodnet")
    p.add_argument("--profile", default="tiny", help="tiny (default), quick or default")
    p.add_argument("--labels", type=Path, help="folder of label maps used instead of labelsTr (e.g. merged pseudo-labels)")
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    p.add_argument("--iterations", type=int, help="override the profile's iterations per epoch")
    _add_device_option(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted training in --out")
    p.add_argument("--seed", type=int, help="seed of the training's random draws (default: unseeded)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict label maps (and probabilities) with a trained specialist")
    p.add_argument("run", type=Path, help="run folder written by 'ipnp train'")
    p.add_argument("images", type=Path, help="folder of <case>_0000.nii.gz images")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--probabilities", action="store_true", help="also write <case>.npz with float16 probabilities")
    _add_device_option(p)
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

    p = sub.add_parser("pseudo-label", help="run one pseudo-labeling round (prompts, generalist, refinement)")
    p.add_argument("dataset", type=Path, help="partially labeled dataset (read only)")
    p.add_argument("--model", type=Path, required=True, help="run folder of a trained softmax specialist")
    p.add_argument("--round", type=int, required=True, help="round number k (k > 1 reads round k-1 from --out)")
    p.add_argument("--out", type=Path, required=True, help="folder that holds rounds/<k>/")
    p.add_argument("--entropy-gate", action="store_true", help="accept a pseudo-label only if its mean entropy fell")
    p.add_argument("--cases", nargs="+", help="training case ids (default: all)")
    p.add_argument("--padding", type=int, default=6, help="box padding p in voxels (default 6)")
    p.add_argument("--tau", type=float, default=0.4, help="class-probability threshold (default 0.4)")
    p.add_argument("--delta", type=int, default=3, help="ROI dilation in voxels (default 3)")
    p.add_argument("--all-components", action="store_true",
                   help="prompt from the whole predicted mask (the paper's rule) instead of its largest component")
    p.add_argument("--position-check", action=argparse.BooleanOptionalAction,
                   help="refuse pseudo-labels placed farther from where the case's true labels expect the organ "
                        "than the labelled cases vary (ipnp's addition; default: refine.position_check's default)")
    p.add_argument("--max-entropy", type=float,
                   help="refuse pseudo-labels whose mean entropy (nats) exceeds this ceiling (ipnp's addition; "
                        "default: none)")
    p.add_argument("--trust-cases", type=int,
                   help="test the generalist on up to N labelled cases per organ and pseudo-label only the organs "
                        "where it beats the specialist's own masks (ipnp's addition; default: 5; 0: the paper's rule)")
    p.add_argument("--trust-precision", type=float,
                   help="the trust test also needs the refined masks' mean precision to reach this share (ipnp's "
                        "addition; default: refine.trust_precision's default)")
    _add_generalist_options(p)
    p.set_defaults(func=_cmd_pseudo_label)

    p = sub.add_parser("generalist-eval", help="score a generalist with prompts made from your ground truth")
    p.add_argument("dataset", type=Path, help="labeled dataset (read only)")
    p.add_argument("--out", type=Path, required=True, help="folder for per_organ.csv and summary.json")
    p.add_argument("--cases", nargs="+", help="case ids (default: all of the split)")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--padding", type=int, default=6, help="box padding p in voxels (default 6)")
    _add_generalist_options(p)
    p.set_defaults(func=_cmd_generalist_eval)

    p = sub.add_parser("run", help="run IPnP end to end: train, pseudo-label in rounds, export, predict, report")
    p.add_argument("dataset", type=Path, help="partially labeled dataset (read only)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--config", type=Path, help="YAML file with the run's settings (see docs/run.md)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--seed", type=int, help="seed of the specialist's training (default: unseeded); overrides the config")
    p.add_argument("--profile", help="tiny, quick (default) or default; overrides the config")
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    p.add_argument("--iterations", type=int, help="override the profile's iterations per epoch")
    p.add_argument("--vls", action=argparse.BooleanOptionalAction, default=None, help="voxel-level selection (default on)")
    p.add_argument("--generalist", help="classical (default), nninteractive or nninteractive-remote")
    p.add_argument("--model-dir", help="nnInteractive model folder (default: $NNINTERACTIVE_MODEL_DIR/models/nnInteractive_v1.0)")
    p.add_argument("--server-url", help="nninteractive-server URL, for nninteractive-remote (API key: $NN_INTERACTIVE_API_KEY)")
    _add_device_option(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="phantoms, 33%% labels, IPnP with the classical generalist on CPU, and a report")
    p.add_argument("--out", type=Path, default=Path("ipnp-demo"), help="folder for everything (default ./ipnp-demo)")
    _add_device_option(p, default="cpu")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("benchmark", help="train, predict and score every method of the paper side by side (Table 1)")
    p.add_argument("dataset", type=Path, help="fully labeled dataset with --keep, else a partially labeled one (read only)")
    p.add_argument("--out", type=Path, required=True, help="benchmark folder; run the same command again to resume")
    p.add_argument("--keep", type=float, nargs="+", metavar="RATIO",
                   help="label ratios to simulate, e.g. 0.67 0.33; leave out for a partially labeled dataset")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="full-labels full-sup partial-sup dodnet marginal ipnp-novls ipnp (default: all that apply)")
    p.add_argument("--profile", help="tiny, quick (default) or default; overrides the config")
    p.add_argument("--seed", type=int, nargs="+", default=[0], metavar="S",
                   help="seed of the simulated partial labels and of every method's training (default 0); several "
                        "seeds run one benchmark each into OUT/seed<S>/ and summarise them in OUT/seeds.md")
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    p.add_argument("--iterations", type=int, help="override the profile's iterations per epoch")
    _add_device_option(p)
    p.add_argument("--config", type=Path, help="YAML run settings for the IPnP runs (see docs/run.md)")
    p.add_argument("--share-from", type=Path, metavar="BENCH",
                   help="start marginal, ipnp-novls and ipnp from BENCH's training before the first round (same "
                        "dataset, seed and schedule), so that they differ from BENCH's columns by the rounds alone")
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser("report", help="(re)write RUN/report.md and its figures")
    p.add_argument("run", type=Path, help="run folder of 'ipnp run'")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("validate", help="check a dataset; exit 1 if it has errors")
    p.add_argument("dataset", type=Path)
    p.set_defaults(func=_cmd_validate)
    return parser


def _os_error_line(exc: OSError, args: argparse.Namespace) -> str:
    """Name the file, else the command's output folder: a write error often carries no file name."""
    where = exc.filename or getattr(args, "out", None) or args.command
    return f"{where}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("ipnp").setLevel(logging.DEBUG if args.debug else logging.INFO)
    try:
        if getattr(args, "device", None) is not None:  # before any work, which may take minutes to reach torch
            check_device(args.device)
        return args.func(args)
    except (IpnpError, OSError) as exc:  # an OSError here is the environment (a full disk, a permission)
        if args.debug:
            traceback.print_exc()
        print(f"ipnp: error: {exc if isinstance(exc, IpnpError) else _os_error_line(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ipnp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
