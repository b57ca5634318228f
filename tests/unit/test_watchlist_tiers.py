"""A list's tier travels with it (issue 16): the gateway matches a cloud list it was never told
of locally, its own lists.yaml wins, and a list it cannot match is refused whole and said so."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edge.video.face.downlink import CloudWatchlists
from edge.video.face.store import WatchlistStore
from shouwang.metrics import Metrics
from shouwang.watchlist_message import Refused, build, build_delta, parse
from tests.unit.test_watchlist_parts import KEY, _gateway, entry, signed

NO_ENTRY = {"description": "禁止入内", "threshold": 0.7, "margin": 0.2, "hits": 4,
            "cooldown_s": 60, "retention_days": 14}


def on(list_name: str, i: int) -> dict[str, Any]:
    return {**entry(i), "list": list_name}


def test_a_list_the_gateway_does_not_know_is_matched_with_the_tier_it_came_with(
        tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    [message] = build("s-1", 3, [on("no_entry", 1), on("police", 2)], signed,
                      lists={"no_entry": NO_ENTRY})
    assert asyncio.run(gateway.handle(message))
    enrolments, lists = gateway.store.matching()
    assert sorted(e.list for e in enrolments) == ["no_entry", "police"]
    assert lists["no_entry"].model_dump() == NO_ENTRY
    assert gateway.refused == {}


def test_the_gateways_own_lists_yaml_wins(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    face = gateway.store.dir
    face.mkdir(parents=True)
    (face / "lists.yaml").write_text(
        "lists:\n  no_entry: {description: ours, threshold: 0.8, margin: 0.1, hits: 2,"
        " cooldown_s: 0, retention_days: 7}\n")
    [message] = build("s-1", 3, [on("no_entry", 1)], signed, lists={"no_entry": NO_ENTRY})
    assert asyncio.run(gateway.handle(message))
    _, lists = gateway.store.matching()
    assert (lists["no_entry"].description, lists["no_entry"].threshold) == ("ours", 0.8)


def test_a_list_it_cannot_match_is_refused_whole_counted_and_reported(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    loose = {**NO_ENTRY, "threshold": 0}  # would match everyone: out of bounds
    [message] = build("s-1", 4, [on("police", 1), on("ghost", 2), on("ghost", 3),
                                 on("loose", 4)], signed, lists={"loose": loose})
    assert asyncio.run(gateway.handle(message))
    enrolments, lists = gateway.store.matching()
    assert [e.list for e in enrolments] == ["police"]  # the rest is applied
    assert "loose" not in lists
    assert sorted(gateway.refused) == ["ghost", "loose"]
    assert "lists.yaml" in gateway.refused["ghost"]
    assert "threshold" in gateway.refused["loose"]
    assert gateway.metrics.rejected_count("watchlist_list_refused") == 2
    # After a restart the gateway still says so in its reports.
    again = CloudWatchlists(WatchlistStore(tmp_path / "edge"), "s-1", gateway.public_key_file,
                            Metrics("edge"))
    asyncio.run(again.start())
    assert (again.held, sorted(again.refused)) == (4, ["ghost", "loose"])
    # The next version with a good tier takes it, and the refusal is over.
    [fixed] = build("s-1", 5, [on("police", 1), on("loose", 4)], signed,
                    lists={"loose": NO_ENTRY})
    assert asyncio.run(again.handle(fixed))
    assert sorted(e.list for e in again.store.load()) == ["loose", "police"]
    assert again.refused == {}


def test_the_parts_of_a_large_list_bring_its_tier(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    parts = build("s-1", 7, [on("no_entry", i) for i in range(1000)], signed,
                  lists={"no_entry": NO_ENTRY})
    assert len(parts) == 2

    async def scenario() -> None:
        assert not await gateway.handle(parts[0])
        assert await gateway.handle(parts[1])

    asyncio.run(scenario())
    enrolments, lists = gateway.store.matching()
    assert len(enrolments) == 1000
    assert lists["no_entry"].threshold == NO_ENTRY["threshold"]


def test_a_delta_applies_on_top_of_exactly_its_base(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    [whole] = build("s-1", 3, [on("police", 1), on("police", 2)], signed)
    assert asyncio.run(gateway.handle(whole))
    changed = {**on("police", 3), "person": entry(2)["person"]}  # P-2 enrolled again
    delta = build_delta("s-1", 5, 3, [changed, on("police", 4)],
                        [("police", entry(1)["person"])], signed)
    assert delta is not None
    # Not on top of what it holds: refused, counted, the report (True) asks for the whole.
    skipped = build_delta("s-1", 9, 7, [on("police", 5)], [], signed)
    assert skipped is not None
    assert asyncio.run(gateway.handle(skipped))
    assert gateway.metrics.rejected_count("watchlist_delta_base") == 1
    assert gateway.held == 3
    assert asyncio.run(gateway.handle(delta))
    assert gateway.held == 5
    held = {e.person: e.id for e in gateway.store.load()}
    assert held == {entry(2)["person"]: changed["id"], entry(4)["person"]: entry(4)["id"]}


def test_a_future_format_is_refused_naming_what_the_gateway_reads(tmp_path: Path) -> None:
    got = parse(signed({"v": 4, "site": "s-1", "version": 1, "entries": []}),
                key=KEY.public_key(), site="s-1", held=0)
    assert isinstance(got, Refused)
    assert got.reason == "unsupported_version"
    assert "v=4" in got.detail
    assert "update the gateway" in got.detail


def test_more_than_500_changes_go_whole() -> None:
    assert build_delta("s-1", 9, 8, [], [("police", f"P-{i}") for i in range(501)],
                       signed) is None
