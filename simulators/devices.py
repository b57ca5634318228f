"""Profile-driven MQTT device simulators with fault injection, a fleet runner and a CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge.config import DeviceBinding
from shouwang import logs
from shouwang.config import BrokerConfig, ConfigError, TlsConfig
from shouwang.mqtt import MqttClient, MqttError
from shouwang.profiles import DeviceProfile, FieldSpec, load_profiles
from shouwang.protocol import Envelope, device_topic, make_envelope, now_ms

log = logging.getLogger(__name__)

# A fleet sped up a hundred thousand times must still not flood the broker.
MIN_INTERVAL_S = 0.05
CONNECT_TIMEOUT_S = 10.0

# --- how values move -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Walk:
    """A bounded random walk: vitals, signal strength, temperatures, flow."""

    start: float
    lo: float
    hi: float
    step: float  # standard deviation per report
    decimals: int = 2

    def first(self, rng: random.Random) -> float:
        return min(max(self.start + rng.gauss(0, self.step), self.lo), self.hi)

    def next(self, value: Any, rng: random.Random, dt_s: float) -> float:
        v = float(value) + rng.gauss(0, self.step)
        # Reflect at the bounds, so the walk does not stick to an edge.
        if v < self.lo:
            v = 2 * self.lo - v
        if v > self.hi:
            v = 2 * self.hi - v
        return min(max(v, self.lo), self.hi)


@dataclass(frozen=True, slots=True)
class Grow:
    """A cumulative count that never decreases: steps, meter totals, dropped frames."""

    per_hour: float  # mean increase per simulated hour
    start: float = 0.0
    start_max: float | None = None  # devices in the field have counted for years already
    decimals: int = 3

    def first(self, rng: random.Random) -> float:
        return self.start if self.start_max is None else rng.uniform(self.start, self.start_max)

    def next(self, value: Any, rng: random.Random, dt_s: float) -> float:
        return float(value) + self.per_hour * dt_s / 3600 * rng.uniform(0, 2)


@dataclass(frozen=True, slots=True)
class Drain:
    """A battery percentage that falls; `recharge_at` puts a wearable back on its charger."""

    per_day: float
    recharge_at: float | None = None
    decimals: int = 0

    def first(self, rng: random.Random) -> float:
        return rng.uniform(60, 100)

    def next(self, value: Any, rng: random.Random, dt_s: float) -> float:
        v = float(value) - self.per_day * dt_s / 86400
        if self.recharge_at is not None and v <= self.recharge_at:
            return 100.0
        return max(v, 0.0)


@dataclass(frozen=True, slots=True)
class Pick:
    """A label or flag that keeps its value and now and then changes: zone, worn, door."""

    values: tuple[Any, ...]
    weights: tuple[float, ...] | None = None
    change_p: float = 0.0  # chance of a new draw per report

    def first(self, rng: random.Random) -> Any:
        return self.values[0]

    def next(self, value: Any, rng: random.Random, dt_s: float) -> Any:
        if rng.random() < self.change_p:
            return rng.choices(self.values, self.weights)[0]
        return value


Behaviour = Walk | Grow | Drain | Pick

# What a field of this name does in a real device. Names are shared across kinds (battery,
# rssi), so one table serves every profile; a field not listed gets `_fallback`.
TYPICAL: dict[str, Behaviour] = {
    "heart_rate": Walk(72, 55, 110, 3),
    "spo2": Walk(97, 93, 100, 0.7),
    "skin_temp": Walk(33.5, 31, 36, 0.15, 1),
    "steps": Grow(per_hour=300),
    "charging": Pick((False, True), (0.95, 0.05), 0.05),
    "worn": Pick((True, False), (0.95, 0.05), 0.05),
    # Around one community: a wearer moves a few metres between reports.
    "lat": Walk(39.9087, 39.9072, 39.9102, 0.00005, 6),
    "lon": Walk(116.3975, 116.3955, 116.3995, 0.00005, 6),
    "zone": Pick(("living_room", "bedroom", "kitchen", "bathroom", "corridor"), None, 0.2),
    "battery": Drain(per_day=0.03),  # ten-year lithium cells
    "rssi": Walk(-75, -105, -55, 2),
    # Clean air: a gas sensor reads a little above zero from drift and noise.
    "lel": Walk(0.3, 0, 3, 0.2, 1),
    "gas": Pick(("natural_gas",)),
    "mains": Pick((True, False), (0.999, 0.001), 0.01),
    "smoke": Walk(0.01, 0, 0.05, 0.005, 3),
    "temperature": Walk(22, 16, 30, 0.3, 1),
    "state": Pick(("closed", "open"), (0.9, 0.1), 0.3),
    "online": Pick((True,)),
    "fps": Walk(25, 23, 25, 0.3, 1),
    "resolution": Pick(("1920x1080",)),
    "bitrate": Walk(4096, 3000, 6000, 150),
    "dropped_frames": Grow(per_hour=20),
    "total": Grow(per_hour=0.02, start=50, start_max=2000),  # about 0.5 m³ a day
    "flow": Walk(0.05, 0, 1.2, 0.1, 3),
    "valve": Pick(("open",)),
    "battery_voltage": Walk(3.6, 3.4, 3.7, 0.005),
    "gas_temp": Walk(15, 5, 25, 0.2, 1),
}
KIND_TYPICAL: dict[tuple[str, str], Behaviour] = {
    # A wearable lasts a few days on a charge; its wearer charges it when it runs low.
    ("wearable", "battery"): Drain(per_day=40, recharge_at=15),
}

# %LEL → ppm by volume: 100 %LEL is the lower explosive limit in % vol × 10 000.
# Methane 5 % vol, propane 2.1 % vol; coal gas (hydrogen-rich town gas) roughly 4.5 % vol.
PPM_PER_LEL = {"natural_gas": 500.0, "lpg": 210.0, "coal_gas": 450.0}


def _gas_alarm(rng: random.Random) -> dict[str, Any]:
    lel = round(rng.uniform(25, 60), 1)
    return {"lel": lel, "level": "high" if lel >= 50 else "low"}


def _track(rng: random.Random) -> str:
    return f"t{rng.randrange(1_000_000):06d}"


# Event data a real device would send; fields not listed here are drawn from their spec.
EVENT_DATA: dict[tuple[str, str], Callable[[random.Random], dict[str, Any]]] = {
    ("gas_detector", "alarm"): _gas_alarm,
    ("smoke_detector", "alarm"): lambda rng: {"smoke": round(rng.uniform(0.15, 1.0), 3)},
    ("camera", "thrown_object"): lambda rng: {
        "confidence": round(rng.uniform(0.6, 0.99), 2),
        "floor": rng.randint(3, 30),
        "track": _track(rng),
    },
    ("camera", "watchlist_hit"): lambda rng: {
        "confidence": round(rng.uniform(0.7, 0.95), 2),
        "watchlist": f"wl-{rng.randrange(1000):04d}",
        "track": _track(rng),
    },
}

# Events that change what the device reports afterwards.
EVENT_EFFECTS: dict[tuple[str, str], dict[str, Any]] = {
    ("door_contact", "opened"): {"state": "open"},
    ("door_contact", "closed"): {"state": "closed"},
    ("wearable", "removed"): {"worn": False},
    ("camera", "stream_lost"): {"online": False},
    ("camera", "stream_restored"): {"online": True},
}


def _fallback(spec: FieldSpec) -> Behaviour:
    """A plausible behaviour from the spec alone, for fields `TYPICAL` does not know."""
    if spec.type == "bool":
        return Pick((False,))
    if spec.type == "str":
        return Pick(tuple(spec.choices) if spec.choices else ("sim",))
    lo, hi = spec.min, spec.max
    if lo is not None and hi is not None:
        span = hi - lo
        return Walk(lo + span / 2, lo + span / 4, hi - span / 4, span / 50)
    if lo is not None:
        return Walk(lo + 10, lo, lo + 20, 1)
    if hi is not None:
        return Walk(hi - 10, hi - 20, hi, 1)
    return Walk(0, -10, 10, 1)


def _fits(behaviour: Behaviour, spec: FieldSpec) -> bool:
    if isinstance(behaviour, Pick):
        want = bool if spec.type == "bool" else str if spec.type == "str" else None
        return want is not None and all(type(v) is want for v in behaviour.values)
    return spec.type in ("int", "float")


def behaviour_for(kind: str, name: str, spec: FieldSpec) -> Behaviour:
    for candidate in (KIND_TYPICAL.get((kind, name)), TYPICAL.get(name)):
        if candidate is not None and _fits(candidate, spec):
            return candidate
    return _fallback(spec)


def emit(spec: FieldSpec, value: Any, decimals: int = 3) -> Any:
    """`value` as the device would send it: the spec's type, inside its range or choices."""
    if spec.type == "bool":
        return bool(value)
    if spec.type == "str":
        text = str(value)
        return text if spec.choices is None or text in spec.choices else spec.choices[0]
    v = float(value)
    if spec.min is not None:
        v = max(v, spec.min)
    if spec.max is not None:
        v = min(v, spec.max)
    return round(v) if spec.type == "int" else round(v, decimals)


def any_valid(name: str, spec: FieldSpec, rng: random.Random) -> Any:
    """Some valid value for `spec`, drawn at random (event data nobody described)."""
    if spec.type == "bool":
        return rng.random() < 0.5
    if spec.type == "str":
        return rng.choice(spec.choices) if spec.choices else f"{name}-{rng.randrange(10**6)}"
    lo = spec.min if spec.min is not None else 0.0
    hi = spec.max if spec.max is not None else lo + 100.0
    return emit(spec, rng.uniform(lo, hi))


def out_of_range_value(name: str, spec: FieldSpec, *, below: bool = False) -> Any:
    """A value the profile refuses for `spec` but of its type: SpO2 140, a negative flow."""
    if spec.choices is not None:
        return f"not-{spec.choices[0]}"
    if spec.type in ("bool", "str"):
        raise ValueError(f"field {name!r} is {spec.type}: it has no range to leave")
    if below and spec.min is not None:
        v = spec.min - max(abs(spec.min) * 0.5, 1.0)
    elif spec.max is not None:
        span = spec.max - (spec.min if spec.min is not None else 0.0)
        v = spec.max + max(span * 0.8, 1.0)
    elif spec.min is not None:
        v = spec.min - max(abs(spec.min) * 0.5, 1.0)
    else:
        raise ValueError(f"field {name!r} has no min or max: it has no range to leave")
    return int(v) if spec.type == "int" else float(v)


class ReadingModel:
    """The telemetry of one device over simulated time; no I/O, so tests can sample it."""

    def __init__(self, profile: DeviceProfile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self.behaviours = {
            name: behaviour_for(profile.kind, name, spec) for name, spec in profile.fields.items()
        }
        self.state: dict[str, Any] = {n: b.first(rng) for n, b in self.behaviours.items()}
        self.battery_per_report: float | None = None

    def next(self, dt_s: float) -> dict[str, Any]:
        """Advance `dt_s` simulated seconds; returns the reading the device sends now."""
        for name, behaviour in self.behaviours.items():
            if name == "battery" and self.battery_per_report is not None:
                self.state[name] = max(float(self.state[name]) - self.battery_per_report, 0.0)
            else:
                self.state[name] = behaviour.next(self.state[name], self.rng, dt_s)
        values = {
            name: emit(spec, self.state[name], getattr(self.behaviours[name], "decimals", 3))
            for name, spec in self.profile.fields.items()
        }
        self._derive(values)
        return values

    def _derive(self, values: dict[str, Any]) -> None:
        fields = self.profile.fields
        if "lel" in values and "ppm" in fields:
            per_lel = PPM_PER_LEL.get(str(values.get("gas")), PPM_PER_LEL["natural_gas"])
            values["ppm"] = emit(fields["ppm"], values["lel"] * per_lel)
        if values.get("online") is False:  # a stream that is down has no frames
            for name in ("fps", "bitrate"):
                if name in values:
                    values[name] = emit(fields[name], 0)

    def event_data(self, event: str) -> dict[str, Any]:
        spec = self.profile.events.get(event)
        if spec is None:
            raise ValueError(f"{self.profile.kind} has no event {event!r}")
        make = EVENT_DATA.get((self.profile.kind, event))
        data = make(self.rng) if make is not None else {}
        for name, fspec in spec.fields.items():
            if name not in data:
                data[name] = any_valid(name, fspec, self.rng)
        return data

    def apply_event(self, event: str) -> None:
        for name, value in EVENT_EFFECTS.get((self.profile.kind, event), {}).items():
            if name in self.state:
                self.state[name] = value

    def drain_battery(self, per_report: float) -> None:
        if "battery" not in self.profile.fields:
            raise ValueError(f"{self.profile.kind} has no battery field")
        self.battery_per_report = per_report


# --- one device ----------------------------------------------------------------------------


class _DeviceClient(MqttClient):
    """An MqttClient that can lose its connection the way a device losing power does."""

    async def drop(self) -> None:
        self._closed = True  # no reconnect, and no "disconnected" warning
        await asyncio.to_thread(self._client.loop_stop)
        # Closing the socket without an MQTT DISCONNECT is what makes the broker send the will.
        self._client._sock_close()
        self._set_connected(False)


def garbage_payload(rng: random.Random) -> bytes:
    # 0xFF never occurs in UTF-8, so no draw can ever be valid JSON.
    return b"\xff" + rng.randbytes(rng.randint(8, 64))


class SimDevice:
    """One simulated device on the edge broker: telemetry, events on demand, and faults.

    Envelope timestamps are wall-clock time (plus any `clock_skew`), not simulated time: the
    edge refuses timestamps a day ahead, and a sped-up fleet would get there within seconds.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        device_id: str,
        profile: DeviceProfile,
        rng: random.Random | None = None,
        *,
        speed: float = 1.0,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        # Each device is its own connection with its own will, so the client id is the device's.
        self.broker = broker.model_copy(update={"client_id": None})
        self.device_id = device_id
        self.profile = profile
        self.rng = rng or random.Random()
        self.speed = speed
        self.min_interval_s = min_interval_s
        self.values = ReadingModel(profile, self.rng)
        self.clock_skew_ms = 0
        self.reports_sent = 0
        self.reports_failed = 0
        self._reporting = asyncio.Event()
        self._reporting.set()
        self.client = self._new_client()

    @property
    def interval_s(self) -> float:
        """Real seconds between reports: the profile's interval divided by `speed`."""
        return max(self.profile.report_interval_s / self.speed, self.min_interval_s)

    def topic(self, kind: str) -> str:
        return device_topic(self.device_id, kind)

    def envelope(self, kind: str, body: dict[str, Any]) -> Envelope:
        """An envelope stamped by this device's clock, which `clock_skew` shifts."""
        ts = now_ms() + self.clock_skew_ms
        return make_envelope(site=None, device=self.device_id, kind=kind, body=body, ts=ts)

    def _status(self, online: bool) -> bytes:
        return self.envelope("status", {"state": "online" if online else "offline"}).to_bytes()

    def _new_client(self) -> _DeviceClient:
        return _DeviceClient(
            self.broker,
            client_id=f"sim-{self.device_id}",
            will=(self.topic("status"), self._status(False)),
            on_connection_change=self._connection_changed,
        )

    def _connection_changed(self, up: bool) -> None:
        if not up:
            return
        # Retained, so a later subscriber learns the device is up; the will replaces it.
        with contextlib.suppress(MqttError):  # lost again already: the next connect says it
            self.client.publish_nowait(self.topic("status"), self._status(True), retain=True)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.client.start()
        await self.client.wait_connected(CONNECT_TIMEOUT_S)

    async def close(self) -> None:
        """Say offline (a clean DISCONNECT discards the will), then disconnect."""
        if self.client.connected:
            with contextlib.suppress(MqttError):
                await self.client.publish(
                    self.topic("status"), self._status(False), retain=True, timeout=5
                )
        await self.client.close()

    async def __aenter__(self) -> SimDevice:
        try:
            await self.start()
        except BaseException:
            await self.client.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self) -> None:
        """Report every `interval_s` (±10 %) until cancelled; pauses and faults keep the loop."""
        task = asyncio.current_task()
        # A random phase, so a fleet started together does not report in lockstep.
        await asyncio.sleep(self.rng.uniform(0, self.interval_s))
        while True:
            await self._reporting.wait()
            try:
                await self.report()
            except MqttError as err:
                # A device without storage loses the reading; the edge sees a gap.
                self.reports_failed += 1
                log.debug("%s: report not sent: %s", self.device_id, err)
            # Python 3.11's wait_for (inside publish) returns the result and swallows a cancel
            # that arrives together with the PUBACK; without this the loop would never end.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self.interval_s * self.rng.uniform(0.9, 1.1))

    # --- what a healthy device sends -------------------------------------------------------

    async def _send(self, kind: str, body: dict[str, Any]) -> str:
        env = self.envelope(kind, body)
        await self.client.publish(self.topic(kind), env.to_bytes(), qos=1)
        return env.id

    async def report(self) -> str:
        """Publish one reading now; one report interval of simulated time passes. Its id."""
        msg_id = await self._send("telemetry", self.values.next(self.profile.report_interval_s))
        self.reports_sent += 1
        return msg_id

    async def event(self, name: str, **data: Any) -> str:
        """Publish event `name` and return its id once the broker has it (QoS 1 PUBACK).

        Data fields not given are generated as the device would send them.
        """
        body = {"event": name, **self.values.event_data(name), **data}
        msg_id = await self._send("event", body)
        self.values.apply_event(name)
        return msg_id

    # --- faults ----------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Lose the connection without an MQTT DISCONNECT, as a device losing power does.

        The broker then publishes the device's will (offline, retained) on `dev/{id}/status`.
        The device stays away until `reconnect()`.
        """
        log.info("%s: dropping the connection (injected fault)", self.device_id)
        await self.client.drop()

    async def reconnect(self) -> None:
        await self.client.close()
        self.client = self._new_client()
        await self.start()

    def stop_reporting(self) -> None:
        """Stay connected but send no telemetry: a hung sensor, or a device in a dead zone."""
        self._reporting.clear()

    def resume_reporting(self) -> None:
        self._reporting.set()

    async def garbage(self) -> None:
        """Publish bytes that are not JSON on the telemetry topic (corrupt firmware, bit rot)."""
        await self.client.publish(self.topic("telemetry"), garbage_payload(self.rng), qos=1)

    async def out_of_range(self, field: str, *, below: bool = False) -> str:
        """Publish a reading whose `field` is outside its valid range; the rest is normal."""
        spec = self.profile.fields.get(field)
        if spec is None:
            raise ValueError(f"{self.profile.kind} has no field {field!r}")
        body = self.values.next(self.profile.report_interval_s)
        body[field] = out_of_range_value(field, spec, below=below)
        return await self._send("telemetry", body)

    def battery_drain(self, rate: float) -> None:
        """From now on the battery falls `rate` percentage points per report."""
        self.values.drain_battery(rate)

    def clock_skew(self, ms: int) -> None:
        """Stamp every later envelope `ms` milliseconds off the true time."""
        self.clock_skew_ms = ms


# --- many devices --------------------------------------------------------------------------

ID_PREFIX = {
    "emergency_button": "btn",
    "wearable": "wear",
    "gas_detector": "gasdet",
    "smoke_detector": "smoke",
    "door_contact": "door",
    "camera": "cam",
    "water_meter": "wm",
    "gas_meter": "gm",
}


def device_id(kind: str, n: int, prefix: str = "") -> str:
    return f"{prefix}{ID_PREFIX.get(kind, kind.replace('_', '-'))}-{n:04d}"


class Fleet:
    """N devices of several kinds, started and stopped together; `speed` compresses time.

    With `autoreport` each device reports on its own schedule; without, only when told.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        counts: Mapping[str, int],
        *,
        speed: float = 1.0,
        seed: int | None = None,
        id_prefix: str = "",
        profiles: Mapping[str, DeviceProfile] | None = None,
        autoreport: bool = True,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        profiles = profiles if profiles is not None else load_profiles()
        unknown = sorted(set(counts) - set(profiles))
        if unknown:
            raise ValueError(f"unknown device kind(s) {unknown}; known: {sorted(profiles)}")
        rng = random.Random(seed)
        self.autoreport = autoreport
        self.devices = [
            SimDevice(
                broker,
                device_id(kind, n, id_prefix),
                profiles[kind],
                random.Random(rng.getrandbits(64)),
                speed=speed,
                min_interval_s=min_interval_s,
            )
            for kind, count in counts.items()
            for n in range(1, count + 1)
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def of_kind(self, kind: str) -> list[SimDevice]:
        return [d for d in self.devices if d.profile.kind == kind]

    def bindings(self) -> list[DeviceBinding]:
        """The `devices:` entries an edge needs to accept this fleet."""
        return [DeviceBinding(id=d.device_id, profile=d.profile.kind) for d in self.devices]

    async def start(self) -> None:
        try:
            await asyncio.gather(*(d.start() for d in self.devices))
        except BaseException:
            await self.close()
            raise
        if self.autoreport:
            self._tasks = [
                asyncio.create_task(d.run(), name=f"sim-{d.device_id}") for d in self.devices
            ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await asyncio.gather(*(d.close() for d in self.devices))

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- command line --------------------------------------------------------------------------


async def run_fleet(fleet: Fleet, seconds: float | None) -> None:
    async with fleet:
        print(f"{len(fleet.devices)} devices connected", flush=True)
        try:
            if seconds is None:
                await asyncio.Event().wait()  # until cancelled (Ctrl-C)
            else:
                await asyncio.sleep(seconds)
        finally:
            sent = sum(d.reports_sent for d in fleet.devices)
            print(f"{len(fleet.devices)} devices sent {sent} reports", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m simulators.devices",
        description="Simulated devices of any profiled kind publishing to an edge broker.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="edge broker port (required unless printing)")
    p.add_argument("--ca-file", type=Path, default=None,
                   help="the broker's CA certificate: TLS, verified (default: plain TCP)")
    p.add_argument("--profile", action="append", required=True, help="device kind; repeatable")
    p.add_argument("--count", type=int, default=1, help="devices of each kind")
    p.add_argument("--speed", type=float, default=1.0, help="report intervals are divided by this")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, help="same seed, same values")
    p.add_argument("--id-prefix", default="", help="prepended to device ids, e.g. a site")
    p.add_argument(
        "--print-bindings", action="store_true", help="print the site.yaml devices: list and exit"
    )
    args = p.parse_args(argv)
    if args.count < 1 or args.speed <= 0:
        p.error("--count must be ≥ 1 and --speed positive")
    try:
        profiles = load_profiles()
    except ConfigError as err:
        print(f"simulators.devices: {err}", file=sys.stderr)
        return 2
    if unknown := sorted(set(args.profile) - set(profiles)):
        p.error(f"unknown profile(s) {unknown}; known: {', '.join(sorted(profiles))}")
    if args.ca_file is not None and not args.ca_file.is_file():
        p.error(f"--ca-file {args.ca_file}: no such file")
    tls = TlsConfig(ca_file=args.ca_file) if args.ca_file else None
    broker = BrokerConfig(host=args.host, port=args.port or 1883, tls=tls)
    counts = dict.fromkeys(args.profile, args.count)
    fleet = Fleet(
        broker,
        counts,
        speed=args.speed,
        seed=args.seed,
        id_prefix=args.id_prefix,
        profiles=profiles,
    )
    if args.print_bindings:
        devices = [b.model_dump(exclude_none=True) for b in fleet.bindings()]
        print(yaml.safe_dump({"devices": devices}, sort_keys=False), end="")
        return 0
    if args.port is None:
        p.error("--port is required")
    logs.setup("simulators")

    async def guarded() -> None:
        task = asyncio.ensure_future(run_fleet(fleet, args.seconds))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(guarded())
    return 0


if __name__ == "__main__":
    sys.exit(main())
