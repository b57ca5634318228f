"""Scenarios: a resident's days as timed device messages, replayed over MQTT on a fast clock.

`living_alone_days` writes the routine of an elder who lives alone (water in the morning, a
walk, meals, steps on the wearable, an evening wash) with a little day-to-day jitter, and
leaves the days you name silent. `ScenarioRunner` replays such steps into a running edge
daemon through its real broker: it moves the daemon's ManualClock to each step (and to every
rule deadline on the way, as the daemon's own watch loop would), publishes the message with
that time as its `ts`, and waits until the edge has taken it in. A week runs in seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shouwang.clock import ManualClock
from shouwang.config import BrokerConfig
from shouwang.ids import new_id
from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope

if TYPE_CHECKING:
    from edge.daemon import EdgeDaemon


@dataclass(frozen=True, slots=True)
class Step:
    at_ms: int
    device: str
    kind: str  # telemetry | event
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Household:
    water: str
    door: str
    wearable: str


def _at(day: dt.date, hhmm: str, tz: dt.tzinfo, jitter_min: float, rng: random.Random) -> int:
    h, m = hhmm.split(":")
    base = dt.datetime.combine(day, dt.time(int(h), int(m)), tz)
    return int((base.timestamp() + rng.uniform(-jitter_min, jitter_min) * 60) * 1000)


def living_alone_days(
    first_day: dt.date,
    days: int,
    home: Household,
    tz: dt.tzinfo,
    *,
    silent: Iterable[int] = (),
    seed: int = 1,
) -> list[Step]:
    """The steps of `days` days from `first_day`; day indexes in `silent` have none."""
    rng = random.Random(seed)
    quiet = set(silent)
    steps: list[Step] = []
    for i in range(days):
        day = first_day + dt.timedelta(days=i)
        if i in quiet:
            continue
        walk = 0

        def water(hhmm: str, jitter: float, day: dt.date = day) -> None:
            start = _at(day, hhmm, tz, jitter, rng)
            steps.append(Step(start, home.water, "telemetry", {"flow": 0.3}))
            steps.append(Step(start + 6 * 60000, home.water, "telemetry", {"flow": 0.0}))

        def walked(hhmm: str, n: int, day: dt.date = day) -> None:
            nonlocal walk
            walk += n
            body = {"steps": walk, "worn": True, "heart_rate": 72, "charging": False}
            steps.append(Step(_at(day, hhmm, tz, 10, rng), home.wearable, "telemetry", body))

        def door(hhmm: str, day: dt.date = day) -> None:
            t = _at(day, hhmm, tz, 30, rng)
            steps.append(Step(t, home.door, "event", {"event": "opened"}))
            steps.append(Step(t + 60000, home.door, "event", {"event": "closed"}))

        walked("06:30", 0)  # the wearable's first report of the day: steps start from 0
        water("07:00", 20)
        walked("07:40", 300)
        door("09:00")
        walked("10:00", 2500)
        door("11:00")
        water("12:00", 20)
        walked("14:30", 400)
        walked("16:30", 600)
        water("18:00", 20)
        walked("20:00", 200)
        water("21:20", 10)
    return sorted(steps, key=lambda s: s.at_ms)


class ScenarioRunner:
    """Replays steps into a running edge daemon through its broker, on its ManualClock."""

    def __init__(self, daemon: EdgeDaemon, clock: ManualClock, broker: BrokerConfig) -> None:
        self.daemon = daemon
        self.clock = clock
        self.client = MqttClient(broker, client_id=f"scenario-{new_id()[-8:]}")
        self.published = 0

    async def __aenter__(self) -> ScenarioRunner:
        await self.client.start()
        await self.client.wait_connected(10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def run(self, steps: Sequence[Step], until_ms: int) -> None:
        for step in steps:
            await self.advance_to(step.at_ms)
            await self.publish(step)
        await self.advance_to(until_ms)

    async def publish(self, step: Step) -> None:
        env = make_envelope(
            site=None, device=step.device, kind=step.kind, body=step.body, ts=step.at_ms
        )
        seen = self._taken()
        await self.client.publish(device_topic(step.device, step.kind), env.to_bytes(), qos=1)
        self.published += 1
        await _until(lambda: self._taken() > seen)

    def _taken(self) -> int:
        counts = self.daemon.rules.counts
        return counts["readings"] + counts["events"]

    async def advance_to(self, at_ms: int) -> None:
        """Move the clock to `at_ms`, stopping at each rule deadline so the daemon ticks there."""
        while True:
            due = self.daemon.rules.next_deadline()
            now = self.clock.now_ms()
            if due is not None and now < due <= at_ms:
                self.clock.advance(due - now)
                await self.settle()
                continue
            if at_ms > now:
                self.clock.advance(at_ms - now)
            await self.settle()
            return

    async def settle(self) -> None:
        """Let the daemon's watch loop and rule timers run at the current time and store what
        they raised."""
        ticks = self.daemon.watch_rounds
        self.daemon.poke()
        await _until(lambda: self.daemon.watch_rounds > ticks and self.daemon.timers_idle())


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    # A test tool watching another component's counters: a short poll, not a daemon loop.
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.002)
