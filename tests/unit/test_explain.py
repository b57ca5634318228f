"""Why an alert was raised reads as a sentence, in 中文 and English (issue 15, item 1).

The detail once read "情况 emergency_button reported press", "规则类型 event_alert".
"""

from __future__ import annotations

import dataclasses

import pytest

from edge.rules.base import RULE_TYPES
from edge.rules.config import BUILTIN_RULES, profile_rules  # noqa: F401 - registers every rule type
from edge.rules.residents import Resident
from shouwang.explain import explain, sentences
from shouwang.profiles import load_profiles
from tests.unit.rules_helpers import Bench

W = ("w-1", "wearable", "r-1")
B = ("b-1", "emergency_button", "r-1")


def as_dict(alert: object) -> dict:
    return dataclasses.asdict(alert)  # type: ignore[call-overload]


def test_every_event_that_raises_an_alert_has_a_sentence() -> None:
    missing = [
        f"{name}.{event}"
        for name, profile in load_profiles().items()
        for event, spec in profile.events.items()
        if spec.alert and f"{name}.{event}" not in sentences().events
    ]
    assert missing == [], f"add to shouwang/explanations.yaml events: {missing}"


def test_every_rule_type_has_a_sentence() -> None:
    have = {key.split(".")[0] for key in sentences().rules} | {"event_alert"}
    assert sorted(set(RULE_TYPES) - have) == []


def test_a_button_pressed_three_times() -> None:
    b = Bench([B], [Resident(id="r-1")])
    for _ in range(3):
        b.event("b-1", "press")
        b.advance(30)
    first = as_dict(b.of("sos")[0])
    assert explain(first, "zh") == "一键通按钮被按下"
    assert explain({**first, "repeats": 2}, "zh") == "一键通按钮被按下 3 次"
    assert explain({**first, "repeats": 2}, "en") == "The emergency button was pressed (3 times)"


def test_a_fall_not_cancelled() -> None:
    b = Bench([W], [Resident(id="r-1")])
    b.event("w-1", "fall")
    b.advance(60)
    [fall] = b.of("fall")
    assert explain(as_dict(fall), "zh") == "佩戴者跌倒，30 秒内未取消"
    assert explain(as_dict(fall), "en") == "The wearer fell and it was not cancelled within 30 s"


def test_a_high_heart_rate_names_the_field_value_and_limit() -> None:
    b = Bench([W], [Resident(id="r-1")])
    b.reading("w-1", worn=True, heart_rate=150)
    b.advance(600)
    [alert] = b.of("heart_rate")
    assert explain(as_dict(alert), "zh") == "心率 150，高于上限 130"
    assert explain(as_dict(alert), "en") == "Heart rate 150, above the limit of 130"


def test_an_unknown_rule_falls_back_to_its_summary_and_a_bad_language_is_named() -> None:
    alert = {"type": "new_thing", "ts": 1, "detail": {"what": "something new happened",
                                                      "why": {"type": "brand_new_rule"}}}
    assert explain(alert, "zh") == "something new happened"
    with pytest.raises(ValueError, match="language 'fr'"):
        explain(alert, "fr")
