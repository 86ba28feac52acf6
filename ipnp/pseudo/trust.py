"""Is the generalist better than the specialist on an organ? A trust test on labelled cases (ipnp's addition).

IPnP assumes that the generalist, prompted from the specialist's mask and refined by its probabilities,
gives a better mask than the specialist's own. Where it does not, a pseudo-label only teaches the
specialist a worse version of what it already predicts (BENCHMARKS.md, session 7: the classical generalist
loses to the specialist on the phantoms' oesophagus and pancreas and wins on the kidneys). The test
measures it per organ and round, on the training cases whose true labels include the organ: prompts from
the specialist's prediction, the generalist, refinement (τ, ROI, the voxels not labelled as another organ),
and the Dice of the result against the true label beside the Dice of the specialist's argmax mask on the
same voxels, and the refined masks' precision. An organ whose refined masks score lower Dice on average, or
whose mean precision is below ``RefineSettings.trust_precision``, is not pseudo-labelled in that round: it
stays unknown, or keeps the pseudo-label an earlier round accepted. Where no labelled case gives a
sample, the organ is trusted, as the paper trusts every organ.

Why precision too: a pseudo-label is positive evidence, so the specialist learns its wrong voxels, not the
ones it misses. On phantoms at 33 % the organs whose carried pseudo-labels were at least 90 % precise came
out even with or ahead of the same trainer without rounds, and the imprecise ones cost the most (BENCHMARKS.md,
session 9: bladder 0.67, right adrenal gland 0.08, which passed the Dice comparison at 0.35 against 0.33).

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
from ipnp.pseudo.candidate import SKIPPED, NoCandidate, dice, label_scores, refined_candidate
from ipnp.pseudo.prompts import AnatomicalAxes
from ipnp.pseudo.refine import RefineSettings

# (Dice of the refined generalist mask, Dice of the specialist's mask, precision of the refined generalist mask,
# precision of the specialist's mask)
Sample = tuple[float, float, float, float]


@dataclass(frozen=True)
class OrganTrust:
    """An organ's trust test: mean Dice of the refined generalist masks and of the specialist's masks, the refined
    masks' mean precision, and the precision they need (``min_precision``).

    ``specialist_precision``, the specialist's masks' mean precision, decides nothing; beside the refined masks'
    it shows whether the generalist's pseudo-labels would be less precise than what the specialist already
    predicts (BENCHMARKS.md, session 18). None for samples stored before it was recorded.
    """

    cases: int
    generalist_dice: float | None
    specialist_dice: float | None
    generalist_precision: float | None
    specialist_precision: float | None = None
    min_precision: float = 0.0

    @property
    def trusted(self) -> bool:
        return self.cases == 0 or (self.generalist_dice >= self.specialist_dice
                                   and self.generalist_precision >= self.min_precision)

    def refusal(self) -> str:
        """The rejection reason for an untrusted organ's pseudo-labels."""
        if self.generalist_dice < self.specialist_dice:
            why = f"Dice {self.generalist_dice:.3f} against the specialist's {self.specialist_dice:.3f}"
        else:
            why = f"precision {self.generalist_precision:.3f} below {self.min_precision:.2f}"
        return f"generalist not trusted on this organ: refined masks {why} on {self.cases} labelled cases"


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
    """The :data:`Sample` of each labelled organ of one case; the generalist's image is set.

    Organs absent from the case, or of which the specialist predicts nothing, give no sample. A generalist
    that fails, or whose mask refinement empties, scores 0 Dice and 0 precision.
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
        generalist_dice, precision = (0.0, None) if isinstance(label, NoCandidate) else label_scores(label, truth)
        own = (predicted == organ) & allowed
        own_precision = float((own & truth).sum() / own.sum()) if own.any() else 0.0
        samples[organ] = (generalist_dice, dice(own, truth), precision or 0.0, own_precision)
    return samples


def organ_trust(samples: list[dict[int, Sample]], organ_ids, min_precision: float = 0.0) -> dict[int, OrganTrust]:
    """Each organ's trust test from the per-case samples."""
    trust = {}
    for organ in organ_ids:
        found = [s[organ] for s in samples if organ in s]
        # zip stops at the shortest sample: a round resumed from samples stored without the specialist's
        # precision averages the three values they have.
        means = [float(np.mean(d)) for d in zip(*found)] if found else [None, None, None]
        trust[organ] = OrganTrust(len(found), *means, min_precision=min_precision)
    return trust
