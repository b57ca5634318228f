"""The example escalation policy and cloud configs in deploy/examples are valid as shipped."""

from __future__ import annotations

from pathlib import Path

from cloud.config import CloudConfig
from cloud.escalation.policy import EscalationConfig
from shouwang.config import load_yaml

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
