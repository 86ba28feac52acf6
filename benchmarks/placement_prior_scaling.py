"""How the position check's prior scales with cases and organs (``ipnp.pseudo.placement.PlacementPrior``).

The prior is rebuilt every round; its leave-one-out tolerance costs O(cases² × organs²) vector operations.
This times building it, and one expected-centre query, on random centres, for dataset sizes from OpenKBP's
43 training patients (7 OARs) to 200 cases × 15 organs, labelled at 50 % and 100 %::

    python benchmarks/placement_prior_scaling.py
"""

from __future__ import annotations

import time

import numpy as np

from ipnp.pseudo.placement import Placement, PlacementPrior

SIZES = ((43, 7, 0.6), (200, 15, 0.5), (200, 15, 1.0))  # cases, organs, share of organs each case labels


def random_prior_input(cases: int, organs: int, labelled: float, rng: np.random.Generator) -> dict[str, dict[int, Placement]]:
    return {
        f"case_{i:03d}": {o: Placement(rng.normal(size=3) * 50, 10.0) for o in range(1, organs + 1) if rng.random() < labelled}
        for i in range(cases)
    }


def main() -> None:
    rng = np.random.default_rng(0)
    print("cases  organs  labelled  build (s)  one query (ms)")
    for cases, organs, labelled in SIZES:
        placements = random_prior_input(cases, organs, labelled, rng)
        start = time.perf_counter()
        prior = PlacementPrior(placements)
        build = time.perf_counter() - start
        queries = [(c, o) for c in list(placements)[:10] for o in range(1, organs + 1)]
        start = time.perf_counter()
        for case_id, organ in queries:
            prior.expected(case_id, organ)
        query = (time.perf_counter() - start) / len(queries)
        print(f"{cases:5d}  {organs:6d}  {labelled:8.0%}  {build:9.2f}  {1000 * query:14.2f}")


if __name__ == "__main__":
    main()
