"""A bad rule file is refused at load, naming the file, the line and the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.rules.config import Binding, RulesSettings, load_rules
from edge.rules.residents import Resident
from edge.rules.suppression import BROKER
from shouwang.config import ConfigError
from tests.unit.rules_helpers import PROFILES, Bench

BINDINGS = [Binding("w-1", "wearable", "r-1", None, BROKER),
            Binding("wm-1", "water_meter", "r-1", None, BROKER)]
RESIDENTS = {"r-1": Resident(id="r-1", tags=["living_alone"])}
GOOD_RULE = "  - {id: hr-night, type: threshold, kinds: [wearable], field: heart_rate, alert: heart_rate, high: 120}\n"


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    load_rules(RulesSettings(file=path), PROFILES, BINDINGS, RESIDENTS)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("rules:\n" + GOOD_RULE + "  - id: x\n    type: threshold\n    kinds: [wearable]\n    field: spo2\n    alert: low_spo2\n    low: 90\n    colour: red\n",
         9, "rules.1.colour: unknown key"),
        ("rules:\n  - id: x\n    type: threshold\n    kinds: [wearable]\n    field: heart_rate\n    alert: heart_rate\n    low: 130\n    high: 40\n",
         2, "low 130 must be below high 40"),
        ("rules:\n  - {id: x, type: threshold, devices: [w-9], field: heart_rate, alert: hr, high: 1}\n",
         2, "rules.0.devices.0: no device 'w-9' in the site config"),
        ("rules:\n  - id: x\n    type: welfare\n    kinds: [wearable]\n    alert: welfare\n    residents: [r-1, r-404]\n",
         6, "rules.0.residents.1: no resident 'r-404' in the site config"),
        ("rules:\n  - {id: x, type: teleport, kinds: [wearable], alert: y}\n",
         2, "unknown rule type 'teleport'"),
        ("rules:\n  - {id: x, type: threshold, kinds: [wearable], field: pulse, alert: hr, high: 1}\n",
         2, "rules.0.field: wearable has no field 'pulse'"),
        ("rules:\n  - {id: x, type: event_alert, kinds: [wearable], event: explode, alert: y}\n",
         2, "rules.0.event: wearable has no event 'explode'"),
        ("\n\ndisable: [wearable.nope]\n", 3, "no rule 'wearable.nope' to disable"),
        ("override:\n  wearable.heart_rate:\n    high: 20\n", 2, "low 40 must be below high 20"),
        ("override:\n  wearable.heart_rate: {id: other}\n", 2, "id cannot be overridden"),
        ("rules:\n" + GOOD_RULE + GOOD_RULE, 3, "duplicate rule id 'hr-night'"),
        ("limits: 3\n", 1, "limits: unknown key"),
    ],
)
def test_a_bad_rule_file_is_refused_with_file_line_and_reason(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'rules.yaml'}:{line}: "), message
    assert reason in message


def test_a_good_rule_file_disables_overrides_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "disable: [wearable.spo2]\noverride:\n  wearable.heart_rate: {high: 100}\nrules:\n"
        + GOOD_RULE,
        encoding="utf-8",
    )
    b = Bench([("w-1", "wearable", "r-1")], [Resident(id="r-1")], rules_file=path)
    assert "wearable.spo2" not in b.engine.rules
    assert b.engine.rules["wearable.heart_rate"].params.high == 100  # type: ignore[attr-defined]
    assert "hr-night" in b.engine.rules


def test_edge_check_reports_a_bad_rule_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {id: x, type: threshold, devices: [nope], field: f, alert: a, high: 1}\n")
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "site": "s1",
        "edge_broker": {"port": 1883},
        "cloud_broker": {"port": 1884},
        "devices": [{"id": "w-1", "profile": "wearable", "resident": "r-1"}],
        "residents": [{"id": "r-1", "tags": ["living_alone"]}],
        "rules": {"file": str(rules)},
    }))
    res = subprocess.run(
        [sys.executable, "-m", "shouwang", "edge", "check", "--config", str(site)],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode != 0
    assert f"{rules}:2: rules.0.devices.0: no device 'nope'" in res.stderr + res.stdout


def test_a_resident_with_an_unknown_tag_or_bad_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tag"):
        Resident(id="r-1", tags=["lonely"])
    with pytest.raises(ValueError, match="low 120 must be below high 60"):
        Resident.model_validate({"id": "r-1", "care_plan": {"heart_rate": {"low": 120, "high": 60}}})
