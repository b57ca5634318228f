"""One vocabulary: every alert type anything raises has a name in 中文 and English (issue 15).

A duty officer once filtered the board by 燃气泄漏 and saw nothing with a gas leak open: the
filter sent `gas` while the detector raised `gas_leak`, and most types showed as raw English.
"""

from __future__ import annotations

from cloud import deadletter as cloud_deadletter
from cloud import watchdog
from edge import deadletter as edge_deadletter
from edge.rules.config import BUILTIN_RULES, profile_rules
from edge.rules.suppression import BROKER, _parent_type
from shouwang.profiles import LIFE_SAFETY_TYPES, load_profiles
from shouwang.vocabulary import alert_types, vocabulary


def raised_anywhere() -> set[str]:
    types = {c.params.alert for c in profile_rules(load_profiles()).values()}
    types |= {r["alert"] for r in BUILTIN_RULES}
    types |= {_parent_type(BROKER), _parent_type("bus:10.0.0.5:502")}
    types |= {watchdog.ALERT_TYPE, edge_deadletter.ALERT_TYPE, cloud_deadletter.ALERT_TYPE}
    return types | set(LIFE_SAFETY_TYPES)


def test_every_type_raised_has_a_name_in_both_languages() -> None:
    known = alert_types()
    missing = sorted(raised_anywhere() - set(known))
    assert missing == [], f"add to shouwang/alert_types.yaml: {missing}"
    for t, names in known.items():  # a name, not the identifier again
        assert t not in (names.zh, names.en)


def test_the_registry_names_nothing_no_one_raises() -> None:
    assert sorted(set(alert_types()) - raised_anywhere()) == []


def test_the_vocabulary_lists_life_safety_first() -> None:
    order = [t["type"] for t in vocabulary()["types"]]
    assert set(order[: len(LIFE_SAFETY_TYPES)]) == set(LIFE_SAFETY_TYPES)
