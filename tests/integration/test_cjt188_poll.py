"""Cjt188Poller against simulated meters on loopback: profile fields, faults, availability, config."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest

from edge.adapters.cjt188 import MeterStatus, MeterType, ReadDataResponse, to_reading
from edge.adapters.cjt188_client import Cjt188MeterConfig, Cjt188Poller, profile_values
from shouwang.config import ConfigError
from shouwang.profiles import FieldSpec, load_profiles
from simulators.cjt188_meter import Cjt188MeterServer, SimMeter
from tests.conftest import Recorder

pytestmark = pytest.mark.integration

LOGGER = "edge.adapters.cjt188_client"
PROFILES = load_profiles()
WATER, GAS = PROFILES["water_meter"], PROFILES["gas_meter"]
COLD, GAS_METER = "00000000000001", "00000000000003"




def meter(device: str, profile: str, port: int, address: str, **kw: Any) -> Cjt188MeterConfig:
    settings: dict[str, Any] = {
        "poll_interval_s": 0.1,
        "timeout_s": 0.2,
        "retries": 0,
        "retry_backoff_s": 0.01,
        "unavailable_after": 3,
        "unavailable_backoff_max_s": 0.4,
    }
    return Cjt188MeterConfig(
        id=device,
        profile=profile,
        host="127.0.0.1",
        port=port,
        address=address,
        **(settings | kw),
    )


def line() -> Cjt188MeterServer:
    return Cjt188MeterServer(
        [
            SimMeter(COLD, MeterType.COLD_WATER, cumulative_m3=12.34, valve_open=False),
            SimMeter(GAS_METER, MeterType.GAS, cumulative_m3=901.23, battery_low=True),
        ]
    )


def poller_for(meters: list[Cjt188MeterConfig], rec: Recorder) -> Cjt188Poller:
    return Cjt188Poller(meters, PROFILES, rec.on_reading, rec.on_availability)


async def test_readings_carry_the_profile_fields_over_one_connection() -> None:
    async with line() as server:
        rec = Recorder()
        poller = poller_for(
            [
                meter("wm", "water_meter", server.port, COLD),
                meter("gm", "gas_meter", server.port, GAS_METER, meter_type="gas"),
            ],
            rec,
        )
        async with poller:
            await rec.wait_until(lambda: len(rec.of("wm")) >= 2 and len(rec.of("gm")) >= 2)
            assert server.connections == 1
    for reading in rec.of("wm"):
        assert reading.values == {"total": 12.34, "valve": "closed"}
    for reading in rec.of("gm"):
        assert reading.values == {"total": 901.23, "valve": "open"}
    for reading in rec.readings:
        profile = WATER if reading.device == "wm" else GAS
        assert all(profile.fields[n].check(v) is None for n, v in reading.values.items())
    assert rec.availability == []
    diag = poller.diagnostics("wm")
    assert (diag["bus"], diag["address"]) == (f"cjt188://127.0.0.1:{server.port}", COLD)
    assert diag["counters"]["requests"] == diag["counters"]["polls"]
    assert [f[0] for f in diag["frames"][-2:]] == ["tx", "rx"]


def test_the_standards_fields_map_onto_the_profile() -> None:
    answer = ReadDataResponse(
        meter_type=MeterType.COLD_WATER,
        address=COLD,
        ser=1,
        current_centi=123_456,
        current_unit=0x2C,
        settlement_centi=100_000,
        settlement_unit=0x2C,
        meter_time=datetime(2024, 5, 6, 7, 8, 9),
        status=MeterStatus.of("abnormal", battery_low=True),
    )
    values = to_reading(answer, device="wm", reading_id="r", ts=0).values
    assert profile_values(values, WATER) == {"total": 1234.56, "valve": "fault"}
    assert all(WATER.fields[n].check(v) is None for n, v in profile_values(values, WATER).items())
    # A profile that declares more of the standard's values gets them under their own names.
    extra = {"battery_low": FieldSpec(type="bool"), "settlement_m3": FieldSpec(type="float")}
    richer = WATER.model_copy(update={"fields": {**WATER.fields, **extra}})
    assert profile_values(values, richer) == {
        "total": 1234.56,
        "valve": "fault",
        "battery_low": True,
        "settlement_m3": 1000.0,
    }


FAULTS = {
    "silent": "timeout",
    "garbage": "garbage",
    "bad_checksum": "bad_checksum",
    "disconnect": "connection_lost",
    "wrong_address": "wrong_address",
    "error_response": "error_response",
}
DECODE_REASONS = {"garbage", "bad_checksum", "wrong_address", "error_response"}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_is_reported_once_and_recovery_once(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reason = FAULTS[fault]
    async with line() as server:
        rec = Recorder()
        poller = poller_for(
            [
                meter("sick", "water_meter", server.port, COLD, retries=1),
                meter("healthy", "gas_meter", server.port, GAS_METER, meter_type="gas"),
            ],
            rec,
        )
        async with poller:
            await rec.wait_until(lambda: len(rec.of("sick")) >= 1)
            setattr(server.meter(COLD).faults, fault, True)
            await rec.wait_until(lambda: len(rec.availability) >= 1)
            healthy_before = len(rec.of("healthy"))
            await rec.wait_until(
                lambda: (
                    poller.diagnostics("sick")["counters"]["failures"] >= 5
                    and len(rec.of("healthy")) > healthy_before
                )
            )
            assert len(rec.availability) == 1
            server.clear_faults()
            await rec.wait_until(lambda: len(rec.availability) >= 2)
            recovered_at = len(rec.of("sick"))
            await rec.wait_until(lambda: len(rec.of("sick")) >= recovered_at + 2)
            up = poller.diagnostics("sick")

    assert [(d, a) for d, a, _ in rec.availability] == [("sick", False), ("sick", True)]
    assert rec.availability[0][2].startswith(f"{reason}: ")
    assert "[raw:" not in rec.availability[0][2]
    counters = up["counters"]
    assert counters["failure_reasons"] == {reason: counters["failures"]}
    attempts = counters["failures"] * (1 if reason == "error_response" else 2)
    assert counters["retries"] == attempts - counters["failures"]
    expected_decode = {reason: attempts} if reason in DECODE_REASONS else {}
    assert counters["decode_errors"] == expected_decode
    assert (up["available"], up["consecutive_failures"]) == (True, 0)
    assert poller.diagnostics("healthy")["counters"]["failures"] == 0
    # One line each way, on the poller's logger only: the client does not log it again.
    changes = [r for r in caplog.records if "sick" in r.getMessage() or COLD in r.getMessage()]
    assert [(r.name, r.levelname) for r in changes] == [(LOGGER, "WARNING"), (LOGGER, "INFO")]
    assert "unavailable after 3 failed polls" in changes[0].getMessage()
    assert any(f[0] == "tx" for f in changes[0].frames)  # type: ignore[attr-defined]


async def test_unreachable_serial_server_is_reported_once_and_recovers() -> None:
    async with line() as gone:
        port = gone.port
    rec = Recorder()
    async with poller_for([meter("wm", "water_meter", port, COLD)], rec):
        await rec.wait_until(lambda: len(rec.availability) == 1)
        async with Cjt188MeterServer([SimMeter(COLD, cumulative_m3=5.0)], port=port):
            await rec.wait_until(lambda: len(rec.availability) == 2)
    assert [(d, a) for d, a, _ in rec.availability] == [("wm", False), ("wm", True)]
    assert rec.availability[0][2].startswith("connect_failed: cannot connect to serial server")
    assert rec.readings[-1].values["total"] == 5.0


def test_config_errors_name_the_meter() -> None:
    def build(*configs: dict[str, Any]) -> Cjt188Poller:
        base = {"host": "127.0.0.1", "port": 10188, "address": COLD, "profile": "water_meter"}
        return Cjt188Poller(
            [Cjt188MeterConfig.model_validate({**base, **c}) for c in configs],
            PROFILES,
            lambda _r: None,
            lambda *_a: None,
        )

    with pytest.raises(ConfigError, match="CJ/T 188 meter 'x': profile: unknown profile 'nope'"):
        build({"id": "x", "profile": "nope"})
    with pytest.raises(ConfigError, match="meter 'x': profile: 'wearable' has no total field"):
        build({"id": "x", "profile": "wearable"})
    with pytest.raises(ConfigError, match="meter 'b': address: same serial server and address"):
        build({"id": "a"}, {"id": "b"})
    with pytest.raises(ConfigError, match="meter 'b': di_order: 'big', but 'a' on the same"):
        build({"id": "a"}, {"id": "b", "address": GAS_METER, "di_order": "big"})
    with pytest.raises(ConfigError, match="meter 'a': duplicate device id"):
        build({"id": "a"}, {"id": "a", "address": GAS_METER})
    # Another serial server is another line: the same address and DI order may differ there.
    build({"id": "a"}, {"id": "b", "port": 10189, "di_order": "big"})
