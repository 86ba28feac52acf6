"""Where the labelled cases place each organ: a position check for pseudo-labels (ipnp's addition).

A specialist trained on few labels can be confidently wrong about *where* an organ is; its prompts then
frame another structure, τ keeps it, the next specialist learns it, and the entropy gate protects it
because its entropy falls (BENCHMARKS.md, "Three seeds"). The case's own true labels say where the
organ should be. For organ i in case c, every organ j that c labels and every other training case c'
that labels both i and j predict the centre of i in c as

    x_j(c) + (x_i(c') - x_j(c'))        (physical mm, so cases of any origin or spacing agree)

and the expected centre is the per-axis median of these predictions. The tolerance for organ i is the
largest error of that prediction over the cases that label i, each predicted from the others
(leave-one-out: how much anatomy varies), plus ``radii`` times the organ's median radius of gyration
(how far the centre of an incomplete but well-placed pseudo-label can lie from the organ's centre).
Where no prediction can be made, because the case labels no organ that another case labels together
with i, or fewer than two cases label i, the check is not made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ipnp.data.dataset import PartialDataset
from ipnp.data.io import Geometry

Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Placement:
    """An organ mask's centre (mm, LPS, SimpleITK's x, y, z) and radius of gyration (mm)."""

    centre: np.ndarray
    radius: float


def placement(mask: np.ndarray, geometry: Geometry, region: Region | None = None) -> Placement | None:
    """The placement of a (z, y, x) ``mask`` lying at ``region`` of a volume with ``geometry`` (None if empty)."""
    index = np.argwhere(mask)
    if not len(index):
        return None
    if region is not None:
        index += np.array([s.start for s in region])
    spacing = np.asarray(geometry.spacing, dtype=float)
    xyz = index[:, ::-1].astype(float)
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    centre = np.asarray(geometry.origin, dtype=float) + direction @ (spacing * xyz.mean(axis=0))
    # A direction matrix is a rotation, so the spread in mm is the spacing-scaled spread of the indices.
    radius = float(np.sqrt((spacing**2 * xyz.var(axis=0)).sum()))
    return Placement(centre, radius)


def label_placements(labels: np.ndarray, geometry: Geometry, organs: frozenset[int] | set[int]) -> dict[int, Placement]:
    """The placement of each of ``organs`` that ``labels`` holds (organs with no voxel are left out)."""
    found = {}
    for organ, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is not None and organ in organs:
            found[organ] = placement(labels[region] == organ, geometry, region)
    return found


class PlacementPrior:
    """Expected organ centres per case and per-organ tolerances, from the true labels of training cases.

    ``labelled`` maps a case to the placements of the organs it labels.
    """

    def __init__(self, labelled: dict[str, dict[int, Placement]], radii: float = 1.5):
        self.labelled = labelled
        self.radii = radii
        errors: dict[int, list[float]] = {}
        for case_id, organs in labelled.items():
            for organ, truth in organs.items():
                expected = self.expected(case_id, organ)
                if expected is not None:
                    errors.setdefault(organ, []).append(float(np.linalg.norm(expected - truth.centre)))
        self.tolerance = {
            organ: max(errs) + radii * float(np.median([p[organ].radius for p in labelled.values() if organ in p]))
            for organ, errs in errors.items()
        }

    @classmethod
    def from_dataset(cls, dataset: PartialDataset, radii: float = 1.5) -> PlacementPrior:
        """The prior of a dataset's training cases, from the organs each case labels (ground truth only)."""
        labelled = {}
        for case_id in tqdm(dataset.training_ids, desc="organ placements", unit="case", leave=False):
            case = dataset.case(case_id)
            labels, geometry = case.load_label()
            labelled[case_id] = label_placements(labels, geometry, case.labeled)
        return cls(labelled, radii)

    def expected(self, case_id: str, organ: int) -> np.ndarray | None:
        """Where ``case_id``'s labelled organs and the other cases put ``organ``'s centre (None: no evidence)."""
        anchors = self.labelled.get(case_id, {})
        predictions = [
            anchor.centre + others[organ].centre - others[j].centre
            for j, anchor in anchors.items() if j != organ
            for other_id, others in self.labelled.items()
            if other_id != case_id and organ in others and j in others
        ]
        return np.median(predictions, axis=0) if predictions else None

    def offset(self, case_id: str, organ: int, found: Placement | None) -> tuple[float, float] | None:
        """(distance in mm of ``found``'s centre from the expected one, tolerance), or None if unchecked."""
        if found is None or organ not in self.tolerance:
            return None
        expected = self.expected(case_id, organ)
        if expected is None:
            return None
        return float(np.linalg.norm(found.centre - expected)), self.tolerance[organ]
