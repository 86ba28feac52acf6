"""Time, peak memory and Dice of the classical generalist on one huge ROI (a 23 M-voxel box in a
200 x 512 x 512 volume, what a barely trained specialist's whole-abdomen mask prompts), within the voxel
budget; with ``--unbounded`` also at full resolution, in a second process so that peaks do not mix.

    python benchmarks/classical_large_roi.py [--unbounded]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def measure(budget: int | None) -> dict:
    import ipnp.generalist.classical as classical
    from ipnp.pseudo.prompts import box_prompts

    shape = (200, 512, 512)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    organ = ((zz - 100) / 80.0) ** 2 + ((yy - 256) / 170.0) ** 2 + ((xx - 256) / 170.0) ** 2 <= 1
    image = (np.where(organ, 60.0, 0.0) + np.random.default_rng(0).normal(0, 20, shape)).astype(np.float32)
    if budget is not None:
        classical._VOXEL_BUDGET = budget
    prompts = box_prompts(organ)
    generalist = classical.ClassicalGeneralist()
    generalist.set_image(image, (1.0, 1.0, 1.0))
    start = time.perf_counter()
    mask = generalist.segment(prompts)
    seconds = time.perf_counter() - start
    return {
        "roi_voxels": int(np.prod([s.stop - s.start for s in prompts.roi(shape, 3)])),
        "budget": classical._VOXEL_BUDGET,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "dice": round(float(2 * (mask & organ).sum() / (mask.sum() + organ.sum())), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unbounded", action="store_true", help="also at full resolution (about 15 GiB)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child or None)))
        return
    rows = []
    for budget in [0] + ([10**12] if args.unbounded else []):
        out = subprocess.run([sys.executable, __file__, "--child", str(budget)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.splitlines()[-1]))
    print("budget roi_voxels seconds peak_rss_gib dice")
    for row in rows:
        print(row["budget"], row["roi_voxels"], row["seconds"], row["peak_rss_gib"], row["dice"])
    if len(rows) == 2:
        print(f"within budget / full resolution: time {rows[0]['seconds'] / rows[1]['seconds']:.3f}, "
              f"peak memory {rows[0]['peak_rss_gib'] / rows[1]['peak_rss_gib']:.3f}")


if __name__ == "__main__":
    main()
