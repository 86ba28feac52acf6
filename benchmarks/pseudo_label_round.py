"""Time and memory of one pseudo-labeling round.

Part 1, phantoms: trains a throwaway specialist (``--profile``, default tiny; ``--epochs``/``--iterations``
to train it longer), then runs one round with the chosen generalist and prints, per case, the time split
into specialist prediction, generalist, refinement and I/O, and per organ the generalist's seconds against
its ROI size; last, the ratio of round time to specialist-prediction time (goal <= 1.5 with ``classical``),
for the paper's round (``trust_cases`` 0, the table above) and, measured in the same run, for the default
round, whose trust test also prompts the generalist on labelled organs and, on the tested cases, on organs it
then distrusts (docs/pseudo_labels.md).

Part 2, CT-sized: one case of 512 x 512 x 200 voxels with the 16-class specialist goes through
prediction and pseudo-labeling; its peak RSS is printed (goal <= 6 GB). It runs twice: with ``roi``, a
stand-in generalist that answers with the prompts' ROI at no cost (the round's own memory: prediction,
refinement, merging), then with the chosen generalist.

Every part runs in its own child process, watched: a child whose RSS passes ``--rss-limit-gib`` (default
10) is killed, so the benchmark never takes a shared machine's memory.

    python benchmarks/pseudo_label_round.py --generalist classical
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class TimedGeneralist:
    """Wraps a generalist and records, per organ call, its seconds and the voxels of the prompts' ROI."""

    def __init__(self, generalist) -> None:
        self.inner, self.name, self.calls = generalist, generalist.name, []

    def set_image(self, image, spacing_zyx) -> None:
        self.shape = image.shape
        self.inner.set_image(image, spacing_zyx)

    def segment(self, prompts):
        import numpy as np

        start = time.perf_counter()
        try:
            return self.inner.segment(prompts)
        finally:
            roi = prompts.roi(self.shape, 3)
            self.calls.append((time.perf_counter() - start, int(np.prod([s.stop - s.start for s in roi]))))


class RoiGeneralist:
    """Answers every organ with its prompts' ROI, at no cost: what a round needs besides the generalist."""

    name = "roi"

    def set_image(self, image, spacing_zyx) -> None:
        self.shape = image.shape

    def segment(self, prompts):
        return prompts.roi_mask(self.shape, 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def train(work: str, cases: int, profile: str, epochs: int | None, iterations: int | None, device: str,
          queue) -> None:
    """Phantoms, their partial labels and a marginal specialist, unless ``work`` already holds them."""
    from ipnp.data.partial import simulate_partial_labels
    from ipnp.data.synth import synthesize_dataset
    from ipnp.specialist.train import train_specialist

    work_dir = Path(work)
    if not (work_dir / "partial").exists():
        synthesize_dataset(work_dir / "phantoms", n_train=cases, n_test=0, seed=0)
        simulate_partial_labels(work_dir / "phantoms", work_dir / "partial", keep=0.67, seed=0)
    if not (work_dir / "specialist" / "specialist.json").exists():
        train_specialist(work_dir / "partial", work_dir / "specialist", "marginal", profile, epochs=epochs,
                         iterations=iterations, device=device)
    queue.put({})


def phantom_round(work: str, generalist_name: str, trust_cases: int, device: str, queue) -> None:
    """One round over the phantoms; reports the store's status, the generalist's calls and the wall time."""
    import torch

    from ipnp.data.dataset import PartialDataset
    from ipnp.generalist.registry import make_generalist
    from ipnp.pseudo.refine import RefineSettings
    from ipnp.pseudo.round import run_round
    from ipnp.specialist.predict import Specialist

    torch.set_num_threads(1)
    specialist = Specialist(Path(work) / "specialist", device=device)
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"round-{generalist_name}-"))
    with make_generalist(generalist_name) as inner:
        generalist = TimedGeneralist(inner)
        start = time.perf_counter()
        folder = run_round(PartialDataset(Path(work) / "partial"), specialist, generalist, out, 1,
                           RefineSettings(trust_cases=trust_cases))
        total = time.perf_counter() - start
    status = json.loads((folder / "pseudo_status.json").read_text())
    queue.put({"status": status, "calls": generalist.calls, "seconds": total, "peak_gib": _peak_gib()})


def _ct_root(work: str, shape: tuple[int, int, int]) -> Path:
    return Path(work) / f"ct-sized-{'x'.join(map(str, shape))}"


def ct_sized_case(work: str, shape: tuple[int, int, int], queue) -> None:
    """The CT-sized phantom, a third of its organs labeled, unless ``work`` already holds it."""
    import numpy as np

    from ipnp.data.dataset import write_dataset_json, write_manifest
    from ipnp.data.io import write_image
    from ipnp.data.labels import AMOS_ORGANS
    from ipnp.data.synth import make_phantom

    root = _ct_root(work, shape)
    if not (root / "partial_labels.json").exists():
        image, label, geometry = make_phantom(0, shape)
        keep = [o for o in AMOS_ORGANS if o % 3 == 0]  # a third of the organs labeled, the rest to pseudo-label
        write_image(image.astype(np.int16), geometry, root / "imagesTr" / "big_0000_0000.nii.gz")
        write_image(np.where(np.isin(label, keep), label, 0).astype(np.uint8), geometry, root / "labelsTr" / "big_0000.nii.gz")
        write_dataset_json(root, AMOS_ORGANS, num_training=1)
        write_manifest(root, {"big_0000": keep})
    queue.put({})


def ct_sized_round(work: str, generalist_name: str, shape: tuple[int, int, int], device: str, queue) -> None:
    """One full-size case through prediction and pseudo-labeling; reports peak RSS in GiB."""
    import torch

    from ipnp.data.dataset import PartialDataset
    from ipnp.generalist.registry import make_generalist
    from ipnp.pseudo.round import run_round
    from ipnp.specialist.predict import Specialist

    torch.set_num_threads(1)
    specialist = Specialist(Path(work) / "specialist", device=device)
    out = Path(tempfile.mkdtemp(dir=work, prefix="ct-sized-out-"))
    before = _peak_gib()
    with RoiGeneralist() if generalist_name == "roi" else make_generalist(generalist_name) as inner:
        generalist = TimedGeneralist(inner)
        start = time.perf_counter()
        folder = run_round(PartialDataset(_ct_root(work, shape)), specialist, generalist, out, 1)
        elapsed = time.perf_counter() - start
    entry = json.loads((folder / "pseudo_status.json").read_text())["cases"]["big_0000"]
    queue.put({"peak_gib": _peak_gib(), "before_round_gib": before, "seconds": elapsed, "split": entry["seconds"],
               "organs": entry["organs"], "calls": generalist.calls})


def watched(target, args: tuple, limit_gib: float) -> dict | None:
    """Run ``target(*args, queue)`` in a spawned child; kill it if its RSS passes ``limit_gib``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=target, args=(*args, queue))
    child.start()
    highest = 0.0
    while child.is_alive():
        try:
            rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{child.pid}/status").read_text().splitlines()
                           if line.startswith("VmRSS:"))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            rss_kib = 0
        highest = max(highest, rss_kib / 2**20)
        if highest > limit_gib:
            child.kill()
            child.join()
            print(f"{target.__name__}: killed, its RSS passed {limit_gib} GiB")
            return None
        if not queue.empty():
            result = queue.get()
            child.join()
            return result
        time.sleep(0.2)
    if child.exitcode != 0:
        print(f"{target.__name__}: failed with exit code {child.exitcode}")
        return None
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generalist", default="classical")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--epochs", type=int, default=None, help="train the specialist longer than the profile says")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per epoch")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--ct-shape", type=int, nargs=3, default=(200, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--skip-ct", action="store_true", help="only the phantom part")
    parser.add_argument("--rss-limit-gib", type=float, default=10.0, help="kill a part whose RSS passes this")
    parser.add_argument("--work", type=Path, default=None, help="reuses the phantoms and specialist found there")
    parser.add_argument("--device", default="cpu", help="where the specialist trains and predicts (cpu, cuda)")
    args = parser.parse_args()
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    os.environ.setdefault("nnUNet_compile", "f")
    from ipnp.pseudo.refine import RefineSettings

    work = args.work or Path(tempfile.mkdtemp(prefix="ipnp-round-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if watched(train, (str(work), args.cases, args.profile, args.epochs, args.iterations, args.device),
               args.rss_limit_gib) is None:
        return
    result = watched(phantom_round, (str(work), args.generalist, 0, args.device), args.rss_limit_gib)
    trusting = watched(phantom_round, (str(work), args.generalist, RefineSettings().trust_cases, args.device),
                       args.rss_limit_gib)
    if result is None or trusting is None:
        return
    status = result["status"]
    print(f"phantoms: {len(status['cases'])} cases, generalist {args.generalist}, profile {args.profile}, specialist on "
          f"{args.device}, 1 CPU thread")
    print(f"{'case':<14} {'organs':>6} {'predict':>8} {'general.':>9} {'refine':>7} {'io':>6}  (seconds)")
    sums = {"predict": 0.0, "generalist": 0.0, "refine": 0.0, "io": 0.0}
    for case, entry in status["cases"].items():
        s = entry["seconds"]
        for key in sums:
            sums[key] += s[key]
        print(f"{case:<14} {len(entry['organs']):>6} {s['predict']:8.2f} {s['generalist']:9.2f} {s['refine']:7.2f} {s['io']:6.2f}")
    print(f"{'total':<14} {'':>6} {sums['predict']:8.2f} {sums['generalist']:9.2f} {sums['refine']:7.2f} {sums['io']:6.2f}")
    print(f"counts: {status['counts']}; peak RSS of the round process {result['peak_gib']:.2f} GiB")
    _print_calls(result["calls"])
    trust = trusting["status"]["trust"]
    untrusted = [o for o, t in trust["organs"].items() if not t["trusted"]]
    print(f"with the trust test (trust_cases {RefineSettings().trust_cases}): {trust['seconds']:.1f} s, organs not "
          f"trusted {untrusted}, counts {trusting['status']['counts']}")
    predict = sum(entry["seconds"]["predict"] for entry in trusting["status"]["cases"].values())
    # Printed here, so that a run stopped during the CT-sized part still has it, and again as the last line.
    ratio_line = (f"round time / specialist prediction time: {result['seconds'] / sums['predict']:.2f} (the paper's round); "
                  f"{trusting['seconds'] / predict:.2f} with the trust test")
    print(ratio_line)
    if not args.skip_ct:
        ct_sized_part(work, args)
        print(ratio_line)


def ct_sized_part(work: Path, args: argparse.Namespace) -> None:
    """The CT-sized case through a round with ``roi``, then with the chosen generalist: peak RSS and times."""
    if watched(ct_sized_case, (str(work), tuple(args.ct_shape)), args.rss_limit_gib) is None:
        return
    for name in ("roi", args.generalist):
        ct = watched(ct_sized_round, (str(work), name, tuple(args.ct_shape), args.device), args.rss_limit_gib)
        if ct is not None:
            split = ", ".join(f"{k} {v:.1f} s" for k, v in ct["split"].items())
            print(f"CT-sized {tuple(args.ct_shape)}, 16 classes, generalist {name}: peak RSS {ct['peak_gib']:.2f} GiB "
                  f"(before the round {ct['before_round_gib']:.2f} GiB); round {ct['seconds']:.1f} s ({split})")
            print("  organs: " + ", ".join(f"{o} {v['status']}" for o, v in ct["organs"].items()))
            _print_calls(ct["calls"])
        else:
            print(f"CT-sized, generalist {name}: no result")


def _print_calls(calls: list[tuple[float, int]]) -> None:
    if calls:
        seconds = sorted(calls, key=lambda c: c[1])
        print(f"  generalist: {len(calls)} organ calls, {sum(c[0] for c in calls) / len(calls):.2f} s each on average; "
              "by ROI size: " + ", ".join(f"{v / 1e3:.0f}k vox {s:.2f} s" for s, v in seconds))


if __name__ == "__main__":
    main()
