"""The example escalation policy and cloud configs in deploy/examples are valid as shipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloud.config import CloudConfig
from cloud.escalation.policy import EscalationConfig, variant
from shouwang.config import ConfigError, load_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def test_the_example_policy_loads_and_falls_back_to_the_catch_all() -> None:
    policies = EscalationConfig(file=EXAMPLES / "escalation.yaml").load()
    sos = policies.for_type("sos")
    assert sos is not None
    assert [(s.name, s.after_s, s.notify) for s in sos.stages] == [
        ("family", 0, ["family"]), ("grid-worker", 120, ["worker"]), ("police", 300, ["police"]),
    ]
    smoke = policies.for_type("smoke")
    assert smoke is not None
    assert [s.name for s in smoke.stages] == ["grid-worker"]


def test_the_example_cloud_config_validates() -> None:
    config = load_yaml(EXAMPLES / "cloud.yaml", CloudConfig)
    assert config.access.cookie_secure == "auto"
    assert config.escalation.file == Path("/etc/shouwang/escalation.yaml")


def test_the_example_data_worker_config_validates() -> None:
    config = load_yaml(EXAMPLES / "cloud-data.yaml", CloudConfig)
    assert config.streams == ["data"]
    assert (config.alert_duties, config.nice) == (False, 10)


def test_a_watchlist_match_has_its_lists_policy_and_stages_once_confirmed() -> None:
    policies = EscalationConfig(file=EXAMPLES / "escalation.yaml").load()
    detail = {"why": {"data": {"watchlist": "police", "person": "P-1"}}}
    kind = variant("watchlist_hit", detail)
    assert kind == "police"
    police = policies.for_type("watchlist_hit", kind)
    assert police is not None
    assert [(s.name, s.notify) for s in police.stages] == [("duty-officer", ["police"])]
    assert [(s.name, s.notify) for s in police.confirmed] == [("station", ["police"])]
    assert policies.responders_for("watchlist_hit", kind) == {"police", "admin"}
    elder = policies.for_type("watchlist_hit", "missing_elder")  # no variant of its own
    assert elder is not None
    assert [s.notify for s in elder.confirmed] == [["family", "worker"]]
    assert policies.responders_for("watchlist_hit", "missing_elder") == {"worker", "admin"}
    # Only a watchlist_hit has a variant; another type's detail is not looked into.
    assert variant("sos", detail) is None
    assert variant("watchlist_hit", {"why": "text"}) is None


def test_confirmed_stage_names_may_not_repeat_the_first_ones(tmp_path: Path) -> None:
    path = tmp_path / "escalation.yaml"
    path.write_text(yaml.safe_dump({"policies": {"watchlist_hit": {
        "stages": [{"name": "duty", "after_s": 0, "notify": ["worker"]}],
        "confirmed": [{"name": "duty", "after_s": 0, "notify": ["family"]}]}}}))
    with pytest.raises(ConfigError, match="stage names must be unique"):
        EscalationConfig(file=path).load()


def test_a_match_without_a_policy_of_its_own_never_takes_the_catch_alls_stages(
    tmp_path: Path,
) -> None:
    path = tmp_path / "escalation.yaml"
    path.write_text(yaml.safe_dump({"policies": {"*": {"stages": [
        {"name": "family", "after_s": 0, "notify": ["family"]},
        {"name": "police", "after_s": 60, "notify": ["police"]}]}}}))
    policy = EscalationConfig(file=path).load().for_type("watchlist_hit", "police")
    assert policy is not None
    assert [(s.name, s.notify) for s in policy.stages] == [("duty-worker", ["worker"])]
    assert policy.confirmed == []
