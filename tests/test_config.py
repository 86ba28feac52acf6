"""The run configuration: defaults, schedule scaling, and one-line errors that name the key."""

import pytest
import yaml

from ipnp.config import RoundsConfig, RunConfig, dump_config, load_config, parse_config
from ipnp.errors import IpnpError
from ipnp.loop import make_generalist_for


def test_default_schedule_keeps_the_papers_fractions_of_training():
    # The paper: rounds after epochs 50, 150, 350, 450 of 1000.
    assert RunConfig(profile="default").round_epochs() == [50, 150, 350, 450]
    assert RunConfig(profile="default", epochs=40).round_epochs() == [2, 6, 14, 18]
    # A short CPU schedule pseudo-labels in its second half.
    assert RunConfig(profile="quick").round_epochs() == [14, 16, 18]
    # A schedule too short for distinct rounds is nudged apart, never merged.
    assert RunConfig(profile="tiny", epochs=8).round_epochs() == [1, 2, 3, 4]
    # ... and back from the end, so that the last round leaves an epoch to train on its pseudo-labels.
    assert RunConfig(profile="quick", epochs=5).round_epochs() == [2, 3, 4]
    assert RunConfig(profile="quick", epochs=4).round_epochs() == [1, 2, 3]
    with pytest.raises(IpnpError, match="must increase strictly"):
        RunConfig(profile="quick", epochs=3).round_epochs()
    assert RunConfig(profile="tiny", epochs=8, rounds=RoundsConfig(at=())).round_epochs() == []


def test_file_values_and_overrides_reach_the_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"profile": "tiny", "epochs": 6, "rounds": {"epochs": [2, 4], "gate_from_round": 2},
                                    "refine": {"tau": 0.5, "max_entropy": 1, "trust_cases": 3, "trust_precision": 0.9},
                                    "vls": False, "pseudo_positive_only": False}))
    config = load_config(path, **{"generalist.name": "nninteractive", "epochs": None})
    assert config.round_epochs() == [2, 4] and config.rounds.gate_from_round == 2
    assert config.refine.tau == 0.5 and config.refine.padding == 6 and not config.vls
    assert not config.pseudo_positive_only and RunConfig().pseudo_positive_only
    assert config.refine.max_entropy == 1.0 and RunConfig().refine.max_entropy is None
    assert config.refine.trust_cases == 3 and RunConfig().refine.trust_cases == 5
    assert config.refine.trust_precision == 0.9
    assert config.generalist.name == "nninteractive" and config.total_epochs == 6
    # The saved form reads back to the same configuration.
    assert parse_config(yaml.safe_load(dump_config(config))) == config


def test_remote_generalist_settings_reach_its_client(monkeypatch):
    made = []
    monkeypatch.setattr("ipnp.generalist.nninteractive.NNInteractiveRemoteGeneralist",
                        lambda url, **options: made.append((url, options)))
    config = parse_config({"generalist": {"name": "nninteractive-remote", "server_url": "http://gpu:1527",
                                          "retries": 7, "read_timeout_s": 600}})
    make_generalist_for(config)
    assert made == [("http://gpu:1527", {"retries": 7, "read_timeout_s": 600.0})]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"learning_rate": 1}, "learning_rate: unknown setting"),
        ({"refine": {"gamma": 1}}, "refine.gamma: unknown setting"),
        ({"refine": {"tau": 1.5}}, "refine.tau 1.5: must lie in [0, 1]"),
        ({"refine": {"delta": -1}}, "refine.delta -1: must not be negative"),
        ({"refine": {"max_entropy": -0.5}}, "refine.max_entropy -0.5: must be positive"),
        ({"refine": {"trust_cases": -1}}, "refine.trust_cases -1: must not be negative"),
        ({"refine": {"trust_precision": 1.5}}, "refine.trust_precision 1.5: must lie in [0, 1]"),
        ({"epochs": 0}, "epochs: 0 must be at least 1"),
        ({"seed": -1}, "seed: -1 must not be negative"),
        ({"epochs": "ten"}, "epochs: expected int"),
        ({"vls": "yes"}, "vls: expected bool"),
        ({"pseudo_positive_only": 1}, "pseudo_positive_only: expected bool"),
        ({"profile": "huge"}, "profile: 'huge' is unknown"),
        ({"generalist": {"name": "sam"}}, "generalist.name: 'sam' is unknown"),
        ({"generalist": {"retries": -1}}, "generalist.retries: -1 must not be negative"),
        ({"generalist": {"read_timeout_s": 0}}, "generalist.read_timeout_s: 0.0 must be positive"),
        ({"rounds": {"at": [0.5, 1.2]}}, "rounds.at: [0.5, 1.2] must be fractions"),
        ({"epochs": 10, "rounds": {"epochs": [4, 3]}}, "must increase strictly"),
        ({"epochs": 10, "rounds": {"epochs": [4, 10]}}, "lie between 1 and 9"),
        ({"rounds": {"gate_from_round": 0}}, "rounds.gate_from_round: 0 must be at least 1"),
        ({"rounds": 3}, "rounds: expected a mapping"),
        # null means "off" or "the profile's" only where the default is None; elsewhere it would slip through
        ({"refine": {"trust_precision": None}}, "refine.trust_precision: null is not allowed here; give a value (default 0.6)"),
        ({"vls": None}, "vls: null is not allowed"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, raw, message):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(IpnpError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_or_invalid_yaml_is_one_line(tmp_path):
    with pytest.raises(IpnpError, match="cannot read the config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: [tiny\n")
    with pytest.raises(IpnpError, match="not valid YAML"):
        load_config(bad)
