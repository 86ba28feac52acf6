"""Time and memory of one pseudo-labeling round.

Part 1, phantoms: trains a throwaway specialist (``--profile``, default tiny), then runs one round with the
chosen generalist and prints, per case, the time split into specialist prediction, generalist, refinement
and I/O; last, the ratio of round time to specialist-prediction time (goal <= 1.5 with ``classical``).

Part 2, CT-sized: in a fresh process, one case of 512 x 512 x 200 voxels with the 16-class specialist goes
through prediction and pseudo-labeling; its peak RSS is printed (goal <= 6 GB).

    python benchmarks/pseudo_label_round.py --generalist classical
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path


def ct_sized_round(run_dir: str, work: str, generalist: str, shape: tuple[int, int, int], queue) -> None:
    """One full-size case through prediction and pseudo-labeling; reports peak RSS in GiB."""
    import numpy as np

    from ipnp.data.dataset import PartialDataset
    from ipnp.data.io import write_image
    from ipnp.data.labels import AMOS_ORGANS
    from ipnp.data.dataset import write_dataset_json, write_manifest
    from ipnp.data.synth import make_phantom
    from ipnp.generalist.registry import make_generalist
    from ipnp.pseudo.round import run_round
    from ipnp.specialist.predict import Specialist

    root = Path(work) / "ct-sized"
    start = time.perf_counter()
    image, label, geometry = make_phantom(0, shape)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    write_image(image.astype(np.int16), geometry, root / "imagesTr" / "big_0000_0000.nii.gz")
    keep = [o for o in AMOS_ORGANS if o % 3 == 0]  # a third of the organs labeled, the rest to pseudo-label
    write_image(np.where(np.isin(label, keep), label, 0).astype(np.uint8), geometry, root / "labelsTr" / "big_0000.nii.gz")
    del image, label
    write_dataset_json(root, AMOS_ORGANS, num_training=1)
    write_manifest(root, {"big_0000": keep})
    made = time.perf_counter() - start
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    specialist = Specialist(run_dir, device="cpu")
    with make_generalist(generalist) as g:
        run_round(PartialDataset(root), specialist, g, Path(work) / "ct-sized-out", 1)
    elapsed = time.perf_counter() - start
    status = json.loads((Path(work) / "ct-sized-out/rounds/1/pseudo_status.json").read_text())
    queue.put({"peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "before_round_gib": before,
               "seconds": elapsed, "make_seconds": made, "split": status["cases"]["big_0000"]["seconds"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generalist", default="classical")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--ct-shape", type=int, nargs=3, default=(200, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--skip-ct", action="store_true", help="only the phantom part")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()

    from ipnp.data.dataset import PartialDataset
    from ipnp.data.partial import simulate_partial_labels
    from ipnp.data.synth import synthesize_dataset
    from ipnp.generalist.registry import make_generalist
    from ipnp.pseudo.round import run_round
    from ipnp.specialist.predict import Specialist
    from ipnp.specialist.train import train_specialist

    work = args.work or Path(tempfile.mkdtemp(prefix="ipnp-round-bench-"))
    if not (work / "partial").exists():
        synthesize_dataset(work / "phantoms", n_train=args.cases, n_test=0, seed=0)
        simulate_partial_labels(work / "phantoms", work / "partial", keep=0.67, seed=0)
    run = work / "specialist"
    if not (run / "specialist.json").exists():
        train_specialist(work / "partial", run, "marginal", args.profile, device="cpu")
    dataset = PartialDataset(work / "partial")
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"round-{args.generalist}-"))
    specialist = Specialist(run, device="cpu")
    start = time.perf_counter()
    with make_generalist(args.generalist) as generalist:
        folder = run_round(dataset, specialist, generalist, out, 1)
    total = time.perf_counter() - start
    status = json.loads((folder / "pseudo_status.json").read_text())
    print(f"phantoms: {len(status['cases'])} cases, generalist {args.generalist}, profile {args.profile}, CPU")
    print(f"{'case':<14} {'organs':>6} {'predict':>8} {'general.':>9} {'refine':>7} {'io':>6}  (seconds)")
    sums = {"predict": 0.0, "generalist": 0.0, "refine": 0.0, "io": 0.0}
    for case, entry in status["cases"].items():
        s = entry["seconds"]
        for key in sums:
            sums[key] += s[key]
        print(f"{case:<14} {len(entry['organs']):>6} {s['predict']:8.2f} {s['generalist']:9.2f} {s['refine']:7.2f} {s['io']:6.2f}")
    print(f"{'total':<14} {'':>6} {sums['predict']:8.2f} {sums['generalist']:9.2f} {sums['refine']:7.2f} {sums['io']:6.2f}")
    print(f"counts: {status['counts']}")
    if not args.skip_ct:
        queue = multiprocessing.get_context("spawn").Queue()
        process = multiprocessing.get_context("spawn").Process(
            target=ct_sized_round, args=(str(run), str(work), args.generalist, tuple(args.ct_shape), queue)
        )
        process.start()
        process.join()
        if process.exitcode == 0:
            r = queue.get()
            split = ", ".join(f"{k} {v:.1f} s" for k, v in r["split"].items())
            print(f"CT-sized {tuple(args.ct_shape)}, 16 classes: peak RSS {r['peak_gib']:.2f} GiB "
                  f"(after building the case {r['before_round_gib']:.2f} GiB); round {r['seconds']:.1f} s ({split})")
        else:
            print(f"CT-sized run failed with exit code {process.exitcode}")
    print(f"round time / specialist prediction time: {total / sums['predict']:.2f}")


if __name__ == "__main__":
    main()
