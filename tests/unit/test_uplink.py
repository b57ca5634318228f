"""The uplink merges runs of telemetry rows into compact messages, and nothing else."""

from __future__ import annotations

import orjson

from edge.config import UplinkConfig
from edge.outbox import Priority, Row
from edge.uplink import MERGE_READINGS, Uplink
from shouwang.protocol import make_envelope, parse_envelope


def telemetry_row(name: str, n: int) -> Row:
    readings = [{"id": f"{name}-{i}", "device": "w-1", "ts": 1_795_000_000_000 + i,
                 "values": {"heart_rate": 70}} for i in range(n)]
    env = make_envelope(site="s1", device="gateway", kind="telemetry", body={"readings": readings})
    return Row(name, Priority.TELEMETRY, "site/s1/up/telemetry", env.to_bytes())


def uplink() -> Uplink:
    return Uplink(None, None, UplinkConfig(), "s1")  # type: ignore[arg-type]


def test_runs_of_telemetry_merge_and_other_rows_stay_apart() -> None:
    health = Row("h1", Priority.HEALTH, "site/s1/up/health", b"{}")
    rows = [telemetry_row("a", 3), telemetry_row("b", 2), health, telemetry_row("c", 1)]
    groups = uplink()._group(rows)
    assert [g.ids for g in groups] == [["a", "b"], ["h1"], ["c"]]
    merged = parse_envelope(groups[0].payload)
    assert not hasattr(merged, "reason"), merged
    assert [r["id"] for r in merged.body["readings"]] == ["a-0", "a-1", "a-2", "b-0", "b-1"]
    assert groups[2].payload == rows[3].payload  # a lone row travels as it was stored
    # The same rows merge into the same id: a resend after a crash is recognisable.
    assert uplink()._group(rows)[0].payload == groups[0].payload


def test_merged_messages_stay_bounded() -> None:
    rows = [telemetry_row(f"r{i}", 300) for i in range(7)]
    groups = uplink()._group(rows)
    sizes = [len(orjson.loads(g.payload)["body"]["readings"]) for g in groups]
    assert sizes == [900, 900, 300]
    assert all(s <= MERGE_READINGS for s in sizes)
