"""Is the generalist better than the specialist on an organ? A trust test on labelled cases (ipnp's addition).

IPnP assumes that the generalist, prompted from the specialist's mask and refined by its probabilities,
gives a better mask than the specialist's own. Where it does not, a pseudo-label only teaches the
specialist a worse version of what it already predicts (BENCHMARKS.md, session 7: the classical generalist
loses to the specialist on the phantoms' oesophagus and pancreas and wins on the kidneys). The test
measures it per organ and round, on the training cases whose true labels include the organ: prompts from
the specialist's prediction, the generalist, refinement (τ, ROI, the voxels not labelled as another organ),
and the Dice of the result against the true label beside the Dice of the specialist's argmax mask on the
same voxels. An organ whose refined masks score lower on average is not pseudo-labelled in that round: it
stays unknown, or keeps the pseudo-label an earlier round accepted. Where no labelled case gives a
sample, the organ is trusted, as the paper trusts every organ.

The specialist was trained on these labels, so its own masks score higher here than on the cases that
lack the organ (phantoms at 33 %, the final `marginal` specialist: mean Dice 0.72–0.75 against 0.64–0.66;
``benchmarks/specialist_bias.py``): the test leans towards not trusting the generalist.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from ipnp.data.dataset import PartialDataset
from ipnp.generalist.base import Generalist
from ipnp.pseudo.candidate import SKIPPED, NoCandidate, dice, refined_candidate
from ipnp.pseudo.prompts import AnatomicalAxes
from ipnp.pseudo.refine import RefineSettings

Sample = tuple[float, float]  # (Dice of the refined generalist mask, Dice of the specialist's mask)


@dataclass(frozen=True)
class OrganTrust:
    """An organ's trust test: mean Dice of the refined generalist masks and of the specialist's masks."""

    cases: int
    generalist_dice: float | None
    specialist_dice: float | None

    @property
    def trusted(self) -> bool:
        return self.cases == 0 or self.generalist_dice >= self.specialist_dice

    def refusal(self) -> str:
        """The rejection reason for an untrusted organ's pseudo-labels."""
        return (f"generalist not trusted on this organ: refined masks Dice {self.generalist_dice:.3f} against the "
                f"specialist's {self.specialist_dice:.3f} on {self.cases} labelled cases")


def trust_plan(dataset: PartialDataset, case_ids: list[str], per_organ: int) -> dict[str, list[int]]:
    """The labelled organs to test in each case: at most ``per_organ`` cases per organ, taken from the cases
    that label the most organs, so that few cases (each one specialist prediction) cover every organ."""
    need = dict.fromkeys(dataset.organ_ids, per_organ)
    plan = {}
    for case_id in sorted(case_ids, key=lambda c: (-len(dataset.labeled_organs(c)), c)):
        organs = sorted(o for o in dataset.labeled_organs(case_id) if need[o] > 0)
        if organs:
            plan[case_id] = organs
            for organ in organs:
                need[organ] -= 1
    return plan


def case_samples(ground_truth: np.ndarray, predicted: np.ndarray, probs, organs: Collection[int],
                 generalist: Generalist, settings: RefineSettings, axes: AnatomicalAxes) -> dict[int, Sample]:
    """The (generalist, specialist) Dice pair of each labelled organ of one case; the generalist's image is set.

    Organs absent from the case, or of which the specialist predicts nothing, give no sample. A generalist
    that fails, or whose mask refinement empties, scores 0.
    """
    seconds = {"generalist": 0.0, "refine": 0.0}  # the round times the whole test, not its parts
    samples = {}
    for organ in organs:
        truth = ground_truth == organ
        if not truth.any():
            continue
        allowed = (ground_truth == 0) | truth
        label = refined_candidate(organ, predicted, probs, generalist, settings, axes, allowed, seconds)
        if isinstance(label, NoCandidate) and label.status == SKIPPED:
            continue
        generalist_dice = 0.0 if isinstance(label, NoCandidate) else dice(label.mask, truth, label.region)
        samples[organ] = (generalist_dice, dice((predicted == organ) & allowed, truth))
    return samples


def organ_trust(samples: list[dict[int, Sample]], organ_ids) -> dict[int, OrganTrust]:
    """Each organ's trust test from the per-case samples."""
    trust = {}
    for organ in organ_ids:
        pairs = [s[organ] for s in samples if organ in s]
        means = [float(np.mean(d)) for d in zip(*pairs)] if pairs else [None, None]
        trust[organ] = OrganTrust(len(pairs), *means)
    return trust
