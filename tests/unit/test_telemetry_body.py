"""What a telemetry body must be before the cloud writes it; names become series labels."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.telemetry import check_telemetry_body


def reading(**changes: Any) -> dict[str, Any]:
    return {"id": "s-1-0", "device": "wear-1", "ts": 1_795_000_000_000,
            "values": {"heart_rate": 70}, **changes}


def test_a_good_batch_passes_twice() -> None:  # the second time from the remembered names
    body = {"readings": [reading(), reading(id="s-1-1", device="wear-2")]}
    assert check_telemetry_body(body) is None
    assert check_telemetry_body(body) is None


@pytest.mark.parametrize(
    ("readings", "reason"),
    [
        ([], "body.readings must be a non-empty list"),
        (["x"], "body.readings[0] must be an object"),
        ([reading(), reading(device=7)], "body.readings[1]: id and device must be strings"),
        ([reading(device="wear-1 evil=1")], "body.readings[0]: device must be 1-64 of"),
        ([reading(device="wear-1,site=other")], "body.readings[0]: device must be 1-64 of"),
        ([reading(device=["wear-1"])], "body.readings[0]: id and device must be strings"),
        ([reading(ts="noon")], "body.readings[0]: ts must be a 64-bit integer"),
        ([reading(values={"heart rate": 70})], "body.readings[0]: field 'heart rate' is not"),
        ([reading(values={"hr=1 x": 70})], "body.readings[0]: field 'hr=1 x' is not"),
    ],
)
def test_a_bad_reading_is_named(readings: list[Any], reason: str) -> None:
    problem = check_telemetry_body({"readings": readings})
    assert problem is not None
    assert problem.startswith(reason)


@pytest.mark.parametrize("changes", [{"device": "wear-1\n"}, {"values": {"heart_rate\n": 70}}])
def test_a_name_with_a_trailing_newline_is_refused(changes: dict[str, Any]) -> None:
    # A newline would end the line protocol's line (cloud/telemetry/victoria.py): `$` let one
    # through at the end of a name.
    assert check_telemetry_body({"readings": [reading(**changes)]}) is not None
