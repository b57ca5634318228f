"""The one scope mechanism: its SQL filter and its per-alert check agree, segment by segment."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.access.passwords import hash_password, verify_password
from cloud.access.scope import Principal, prefix_matches
from cloud.store import Store
from shouwang.protocol import make_envelope

LOCATIONS = [
    "d1/s1/c-a", "d1/s1/c-a/g1/b1", "d1/s1/c-ab/g1", "d1/s1/c_a/g1", "d1/s1/cxa/g1",
    "d1/s1/c%a/g1", "d1/s2/c-a/g1", "d1", None,
]
PRINCIPALS = [
    Principal(1, "p", "police", "p", locations=("d1/s1/c-a",)),
    Principal(2, "p2", "police", "p2", locations=("d1/s1/c_a", "d1/s2")),
    Principal(3, "w", "worker", "w", locations=("d1/s1/c%a/g1",)),
    Principal(4, "f", "family", "f", residents=("r-1", "r-3")),
    Principal(5, "none", "police", "none"),
    Principal(6, "a", "admin", "a"),
]


@pytest.mark.parametrize(
    ("location", "prefix", "expected"),
    [
        ("d1/s1/c-a", "d1/s1/c-a", True),
        ("d1/s1/c-a/g1", "d1/s1/c-a", True),
        ("d1/s1/c-ab", "d1/s1/c-a", False),
        ("d1/s1", "d1/s1/c-a", False),
        (None, "d1", False),
    ],
)
def test_a_prefix_covers_whole_segments_only(location: str | None, prefix: str, expected: bool) -> None:
    assert prefix_matches(location, prefix) is expected


async def test_sql_filter_and_python_check_select_the_same_alerts(tmp_path: Path) -> None:
    store = await Store.connect(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite")
    try:
        stored = []
        for n, location in enumerate(LOCATIONS):
            env = make_envelope(
                site="s", device=f"d{n}", kind="alert", ts=1_000 + n,
                body={"type": "sos", "severity": "critical", "subject": "x", "dedup_key": "x",
                      "location": location, "resident": f"r-{n}"},
            )
            alert = await store.insert_alert(env)
            assert alert is not None
            stored.append(alert)
        for p in PRINCIPALS:
            by_sql = {a["id"] for a in await store.list_alerts(limit=100, where=[p.where()])}
            by_check = {a["id"] for a in stored if p.allows(a)}
            assert by_sql == by_check, p.username
        # LIKE wildcards in a scope are literal characters, not patterns.
        p2 = {a["location"] for a in stored if PRINCIPALS[1].allows(a)}
        assert p2 == {"d1/s1/c_a/g1", "d1/s2/c-a/g1"}
        assert {a["location"] for a in stored if PRINCIPALS[2].allows(a)} == {"d1/s1/c%a/g1"}
        assert {a["resident"] for a in stored if PRINCIPALS[3].allows(a)} == {"r-1", "r-3"}
        assert not any(PRINCIPALS[4].allows(a) for a in stored)
    finally:
        await store.close()


def test_views_withhold_unclassified_detail_from_police_and_workers() -> None:
    alert = {"id": "x", "detail": {"reason": "no water 24 h", "signals": [1], "new_key": 2}}
    assert PRINCIPALS[0].view(alert)["detail"] == {"reason": "no water 24 h"}
    assert PRINCIPALS[2].view(alert)["detail"] == {"reason": "no water 24 h"}
    assert PRINCIPALS[3].view(alert)["detail"] == alert["detail"]
    assert PRINCIPALS[5].view(alert)["detail"] == alert["detail"]
    assert alert["detail"]["signals"] == [1]  # the view is a copy


def test_views_share_the_rule_and_the_tags_but_not_the_readings_it_fired_on() -> None:
    who = {"device": "wear-1", "kind": "wearable", "resident": "r-1", "tags": ["dementia"],
           "location": "d1/s1/c-a/g1/b1"}
    why = {"rule": "hr-high", "type": "threshold", "field": "heart_rate", "value": 151,
           "max": 140, "data": {"heart_rate": 151}}
    alert = {"id": "x", "detail": {"who": who, "what": "heart rate high", "why": why,
                                   "evidence": ["m-1"], "signals": [151]}}
    shared = {"who": who, "what": "heart rate high", "evidence": ["m-1"],
              "why": {"rule": "hr-high", "type": "threshold"}}
    assert PRINCIPALS[0].view(alert)["detail"] == shared
    assert PRINCIPALS[2].view(alert)["detail"] == shared
    assert PRINCIPALS[3].view(alert)["detail"] == alert["detail"]
    assert PRINCIPALS[0].view({"id": "y", "detail": {"why": "text"}})["detail"] == {"why": {}}


def test_password_hashes_verify_only_their_password() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert hash_password("correct horse battery") != stored  # salted
    assert not verify_password("x", "not-a-hash")
