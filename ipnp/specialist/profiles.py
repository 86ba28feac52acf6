"""Training profiles as nnU-Net plans variants derived from the dataset's own ``3d_fullres`` plans.

A profile adds one configuration to ``plans.json`` that inherits ``3d_fullres`` (so it shares its spacing,
normalisation and preprocessed data) and replaces the network and patch when the profile says so.

- ``tiny``: for tests; a 4-stage, 1-conv-per-stage U-Net (8..64 features), ~0.35 s per step on 2 CPU cores.
- ``quick``: for CPU benchmarks and the demo; a small U-Net that learns the phantoms in minutes.

``tiny`` and ``quick`` train with AdamW and no mirroring (``CPU_RECIPE``), ``default`` with nnU-Net's own
recipe.
- ``default``: nnU-Net's own ``3d_fullres`` and schedule (1000 epochs x 250 iterations), for GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipnp.errors import IpnpError


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int
    iterations_per_epoch: int
    val_iterations: int
    features: tuple[int, ...] | None = None  # None: keep nnU-Net's planned network
    convs_per_stage: int = 2
    patch_size: tuple[int, int, int] | None = None
    batch_size: int | None = None
    recipe: dict | None = None  # ipnp_recipe for the trainer (see trainers._IpnpTrainer); None: nnU-Net's own
    # When pseudo-labeling rounds run, as fractions of the epochs (ipnp.config explains the choice).
    round_fractions: tuple[float, ...] = (0.05, 0.15, 0.35, 0.45)

    @property
    def configuration(self) -> str:
        return "3d_fullres" if self.features is None else f"ipnp_{self.name}"


# Measured on phantoms (docs/specialist.md): with nnU-Net's SGD (momentum 0.99, lr 0.01) and mirroring,
# the quick network scores a mean DSC of 0.05 after 800 steps; with AdamW (lr 0.01, poly decay) and no
# mirroring, 0.76. CPU profiles have a few hundred steps, so they take the fast-converging recipe.
CPU_RECIPE = {"optimizer": "adamw", "initial_lr": 1e-2, "mirroring": False}

# The paper's rounds come after 5-45 % of 1000 epochs (250 000 steps), when the specialist is already good.
# 5 % of quick's 800 steps is 40: its predictions are still empty or wrong, and a wrong pseudo-label accepted
# then is carried until one with lower entropy replaces it (measured: pseudo-label Dice 0.11-0.22 with the
# paper's fractions). A short schedule therefore pseudo-labels in its second half, and late in it: the
# specialist still improves fast there (at 60 % its masks of the organs a case lacks score 0.50 Dice, at the
# end 0.64), and a pseudo-label fixes in the errors of the specialist that made it. Measured on phantoms,
# three paired seeds each (BENCHMARKS.md): 60/70/80 % beat 40/60/80 % in all six runs (+3.2 and +5.1 DSC);
# 70/80/90 % beat 60/70/80 % by +1.65 at 33 % labels (3 of 3) and +0.67 at 67 % (2 of 3, the third a tie).
SHORT_SCHEDULE_ROUNDS = (0.7, 0.8, 0.9)

PROFILES = {
    "tiny": Profile("tiny", epochs=2, iterations_per_epoch=4, val_iterations=1, features=(8, 16, 32, 64), convs_per_stage=1,
                    patch_size=(32, 64, 64), batch_size=2, recipe=CPU_RECIPE),
    "quick": Profile("quick", epochs=20, iterations_per_epoch=40, val_iterations=2, features=(16, 32, 64, 128), convs_per_stage=1,
                     patch_size=(48, 64, 64), batch_size=2, recipe=CPU_RECIPE, round_fractions=SHORT_SCHEDULE_ROUNDS),
    "default": Profile("default", epochs=1000, iterations_per_epoch=250, val_iterations=50),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise IpnpError(f"--profile {name}: unknown profile; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def add_profile_configuration(plans: dict, profile: Profile) -> str:
    """Add the profile's configuration to ``plans`` (in place) and return its name."""
    if profile.features is None:
        return profile.configuration
    base = plans["configurations"]["3d_fullres"]
    arch = base["architecture"]
    kwargs = dict(arch["arch_kwargs"])
    planned_strides = kwargs["strides"]
    # A small image gets fewer stages from nnU-Net than the profile has; the network cannot be deeper.
    n = min(len(profile.features), len(planned_strides))
    # Keep nnU-Net's anisotropy-aware strides for the stages the small network has.
    strides = [list(s) for s in planned_strides[:n]]
    kernels = [list(k) for k in kwargs["kernel_sizes"][:n]]
    patch = _fit_patch(profile.patch_size, base["patch_size"], strides)
    kwargs.update(
        n_stages=n,
        features_per_stage=list(profile.features[:n]),
        kernel_sizes=kernels,
        strides=strides,
        n_conv_per_stage=[profile.convs_per_stage] * n,
        n_conv_per_stage_decoder=[profile.convs_per_stage] * (n - 1),
    )
    plans["configurations"][profile.configuration] = {
        "inherits_from": "3d_fullres",
        "patch_size": patch,
        "batch_size": profile.batch_size or base["batch_size"],
        "architecture": {**arch, "arch_kwargs": kwargs},
        **({"ipnp_recipe": dict(profile.recipe)} if profile.recipe else {}),
    }
    return profile.configuration


def _fit_patch(wanted: tuple[int, int, int], planned: list[int], strides: list[list[int]]) -> list[int]:
    """The wanted patch, no larger than nnU-Net's planned one, divisible by the network's total stride."""
    total = [1, 1, 1]
    for stride in strides:
        total = [t * s for t, s in zip(total, stride)]
    return [max(t, (min(w, p) // t) * t) for w, p, t in zip(wanted, planned, total)]
