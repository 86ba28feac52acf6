"""The run configuration: every hyperparameter of an IPnP run in one YAML file, validated.

Unknown keys and out-of-range values are one-line errors that name the key. The effective configuration
(file values over defaults over nothing else) is saved as ``RUN/config.yaml``, so a run can be resumed and
reported without the file it started from.

Default round schedule: the paper refreshes pseudo-labels after epochs 50, 150, 350 and 450 of 1000
(Fig. 3), i.e. at 5 %, 15 %, 35 % and 45 % of training. The ``default`` profile keeps those fractions of
its epochs; the short CPU schedule of ``quick`` pseudo-labels at 70 %, 80 % and 90 % instead, because 5 % of
a few hundred steps leaves the specialist predicting nothing useful (see ``ipnp.specialist.profiles``).
``rounds.at`` sets other fractions and ``rounds.epochs`` absolute epochs. The entropy gate is active from
round 3: the paper activates it "only in later iterations", so that early pseudo-labels may grow while the
specialist is still uncertain.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ipnp.device import check_device_name
from ipnp.errors import IpnpError
from ipnp.generalist.registry import GENERALISTS
from ipnp.pseudo.refine import RefineSettings
from ipnp.specialist.profiles import PROFILES, get_profile


@dataclass(frozen=True)
class RoundsConfig:
    at: tuple[float, ...] | None = None  # fractions of the training epochs; None: the profile's
    epochs: tuple[int, ...] | None = None  # absolute epochs; replaces ``at``
    gate_from_round: int = 3


@dataclass(frozen=True)
class GeneralistConfig:
    name: str = "classical"
    model_dir: str | None = None  # nninteractive: weights folder (else NNINTERACTIVE_MODEL_DIR)
    server_url: str | None = None  # nninteractive-remote; the API key comes from NN_INTERACTIVE_API_KEY
    device: str | None = None
    retries: int = 3  # nninteractive-remote: tries again after a failed request, the delay doubling from 0.5 s
    read_timeout_s: float = 120.0  # nninteractive-remote: the longest wait for one answer of the server


@dataclass(frozen=True)
class RunConfig:
    profile: str = "quick"
    epochs: int | None = None  # None: the profile's
    iterations_per_epoch: int | None = None
    device: str = "auto"
    vls: bool = True
    # False: a pseudo-label also says where its organ is not, as in the paper (ipnp.specialist.trainers)
    pseudo_positive_only: bool = True
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    refine: RefineSettings = field(default_factory=RefineSettings)
    generalist: GeneralistConfig = field(default_factory=GeneralistConfig)
    seed: int | None = None  # of the specialist's training (ipnp.specialist.train); None: unseeded

    @property
    def total_epochs(self) -> int:
        return self.epochs or get_profile(self.profile).epochs

    def round_epochs(self) -> list[int]:
        """The epoch after which each round runs, strictly increasing and inside the schedule."""
        total = self.total_epochs
        if self.rounds.epochs is not None:
            epochs = list(self.rounds.epochs)
        else:
            # Rounded, and nudged apart so that a short schedule keeps every round after its own epoch: up
            # from the first, then down from the last so that the last round still leaves an epoch after it.
            epochs = []
            fractions = self.rounds.at if self.rounds.at is not None else get_profile(self.profile).round_fractions
            for fraction in fractions:
                epochs.append(max(round(fraction * total), epochs[-1] + 1 if epochs else 1))
            for i in reversed(range(len(epochs))):
                epochs[i] = min(epochs[i], (epochs[i + 1] if i + 1 < len(epochs) else total) - 1)
        if epochs and (epochs[-1] >= total or epochs != sorted(set(epochs)) or epochs[0] < 1):
            raise IpnpError(
                f"rounds: epochs {epochs} must increase strictly and lie between 1 and {total - 1} "
                f"(the run trains {total} epochs)"
            )
        return epochs

    def as_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_type(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise IpnpError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def _check_null(key: str, cls: type, name: str) -> None:
    """A YAML ``null`` is allowed only where the setting's default is None (off, or the profile's value)."""
    default = next(f.default for f in fields(cls) if f.name == name)
    if default is not None:
        raise IpnpError(f"{key}: null is not allowed here; give a value (default {default!r})")


_SCALARS = {
    "profile": str, "epochs": int, "iterations_per_epoch": int, "device": str, "vls": bool, "pseudo_positive_only": bool, "seed": int,
    "rounds.at": list, "rounds.epochs": list, "rounds.gate_from_round": int,
    "refine.padding": int, "refine.tau": float, "refine.delta": int, "refine.largest_component": bool,
    "refine.position_check": bool, "refine.max_entropy": float, "refine.trust_cases": int, "refine.trust_precision": float,
    "generalist.name": str, "generalist.model_dir": str, "generalist.server_url": str, "generalist.device": str,
    "generalist.retries": int, "generalist.read_timeout_s": float,
}
_SECTIONS = {"rounds": RoundsConfig, "refine": RefineSettings, "generalist": GeneralistConfig}


def parse_config(raw: Any, source: str = "config") -> RunConfig:
    """Validate a mapping (as read from YAML) into a :class:`RunConfig`; errors name ``source`` and the key."""
    try:
        return _parse(raw)
    except IpnpError as exc:
        raise IpnpError(f"{source}: {exc}") from None


def _parse(raw: Any) -> RunConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise IpnpError("expected a mapping of settings at the top level")
    top: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise IpnpError(f"{key}: expected a mapping of settings")
            top[key] = _section(key, value)
        elif key in _SCALARS:
            top[key] = _check_null(key, RunConfig, key) if value is None else _check_type(key, value, _SCALARS[key])
        else:
            raise IpnpError(f"{key}: unknown setting; known: {', '.join(sorted(set(k.split('.')[0] for k in _SCALARS)))}")
    config = RunConfig(**top)
    _check_ranges(config)
    return config


def _section(name: str, raw: dict) -> Any:
    cls = _SECTIONS[name]
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{name}.{key}"
        if key not in known:
            raise IpnpError(f"{dotted}: unknown setting; known: {', '.join(sorted(known))}")
        if value is None:
            _check_null(dotted, cls, key)
        else:
            value = _check_type(dotted, value, _SCALARS[dotted])
            if isinstance(value, list):
                item = float if key == "at" else int
                value = tuple(_check_type(f"{dotted}[{i}]", v, item) for i, v in enumerate(value))
        values[key] = value
    try:
        return cls(**values)
    except IpnpError as exc:  # RefineSettings checks its own ranges
        raise IpnpError(f"{name}.{exc}") from None


def _check_ranges(config: RunConfig) -> None:
    if config.profile not in PROFILES:
        raise IpnpError(f"profile: {config.profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    for key in ("epochs", "iterations_per_epoch"):
        if getattr(config, key) is not None and getattr(config, key) < 1:
            raise IpnpError(f"{key}: {getattr(config, key)} must be at least 1")
    if config.seed is not None and config.seed < 0:
        raise IpnpError(f"seed: {config.seed} must not be negative")
    for key, device in (("device", config.device), ("generalist.device", config.generalist.device)):
        if device is not None:
            check_device_name(device, key)
    if config.generalist.name not in GENERALISTS:
        raise IpnpError(f"generalist.name: {config.generalist.name!r} is unknown; choose one of {', '.join(GENERALISTS)}")
    if config.generalist.retries < 0:
        raise IpnpError(f"generalist.retries: {config.generalist.retries} must not be negative")
    if config.generalist.read_timeout_s <= 0:
        raise IpnpError(f"generalist.read_timeout_s: {config.generalist.read_timeout_s} must be positive")
    if config.rounds.gate_from_round < 1:
        raise IpnpError(f"rounds.gate_from_round: {config.rounds.gate_from_round} must be at least 1")
    if any(not 0 < f < 1 for f in config.rounds.at or ()):
        raise IpnpError(f"rounds.at: {list(config.rounds.at)} must be fractions of training strictly between 0 and 1")
    config.round_epochs()


def load_config(path: str | os.PathLike | None, **overrides: Any) -> RunConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply command-line ``overrides``.

    ``overrides`` use dotted keys (``"generalist.name"``); ``None`` values are ignored.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise IpnpError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise IpnpError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise IpnpError(f"{path}: expected a mapping of settings at the top level")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return parse_config(raw, str(path) if path is not None else "config")


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.as_dict(), sort_keys=False)
