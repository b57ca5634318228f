"""One scheduler for every polled protocol: deadlines, retries, availability, counters."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import Field, model_validator

from shouwang.backoff import Backoff
from shouwang.config import Strict
from shouwang.profiles import DeviceProfile, FieldSpec
from shouwang.records import Reading
from shouwang.registers import Value

RawFrame = tuple[str, str, float]  # (direction "tx" | "rx", hex bytes, time it was seen)
OnReading = Callable[[Reading], None]
OnAvailability = Callable[[str, bool, str], None]

# First polls fall on a grid of 1/20 interval (50 ms to 1 s), so devices due together share one
# wake-up of the event loop: waking an idle process costs more than the read it then does.
_GRID_PER_INTERVAL = 20
_GRID_MIN_S, _GRID_MAX_S = 0.05, 1.0


class PollLink(Strict):
    """When and how hard to poll one device; every polled protocol's link block has these."""

    poll_interval_s: float = Field(60.0, gt=0, description="Time between polls")
    timeout_s: float = Field(1.0, gt=0, description="Wait this long for each reply")
    retries: int = Field(
        2, ge=0, le=10, description="Further attempts after a failed one, per poll"
    )
    retry_backoff_s: float = Field(
        0.2, gt=0, description="Pause before the first retry; doubles per retry, with jitter"
    )
    unavailable_after: int = Field(
        3, ge=1, description="Consecutive failed polls before the meter is reported unavailable"
    )
    unavailable_backoff_max_s: float = Field(
        300.0, gt=0, description="While unavailable, the poll interval doubles up to this"
    )
    frames_kept: int = Field(20, ge=1, le=1000, description="Raw frames kept for diagnostics")

    @model_validator(mode="after")
    def _backoff_cap(self) -> PollLink:
        if self.unavailable_backoff_max_s < self.poll_interval_s:
            raise ValueError("unavailable_backoff_max_s must be at least poll_interval_s")
        return self


class DeviceError(Exception):
    """A device did not give what was asked; `reason` is a short label for counters."""

    def __init__(self, device: str, reason: str, message: str, frames: Sequence[RawFrame] = ()):
        super().__init__(f"{device}: {message}")
        self.device = device
        self.reason = reason
        self.detail = message
        self.frames = list(frames)
        self.retryable = True


class DeviceUnavailable(DeviceError):
    """No reply: timeout, refused connection, connection lost."""


class DecodeError(DeviceError):
    """A reply that is no answer: an error response, another device's reply, garbage."""


@dataclass(slots=True)
class PollCounters:
    """Plain counters, so the daemon can export them to Prometheus as it likes."""

    polls: int = 0
    readings: int = 0
    failures: int = 0
    requests: int = 0
    retries: int = 0
    deadline_misses: int = 0
    late_replies: int = 0
    callback_errors: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    decode_errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "readings": self.readings,
            "failures": self.failures,
            "requests": self.requests,
            "retries": self.retries,
            "deadline_misses": self.deadline_misses,
            "late_replies": self.late_replies,
            "callback_errors": self.callback_errors,
            "failure_reasons": dict(self.failure_reasons),
            "decode_errors": dict(self.decode_errors),
        }


@dataclass(frozen=True, slots=True)
class Sample:
    """What one poll read: a Reading named in the profile's fields, before the profile's checks.

    `problems` names fields the protocol could not decode: field -> (reason, detail).
    """

    reading: Reading
    problems: Mapping[str, tuple[str, str]] = field(default_factory=dict)


L = TypeVar("L", bound=PollLink)


@dataclass(slots=True, eq=False)
class PolledDevice(Generic[L]):
    """One device's schedule and health; a protocol subclasses it to add its own state."""

    id: str
    config: L
    profile: DeviceProfile
    counters: PollCounters = field(default_factory=PollCounters)
    available: bool = True
    consecutive_failures: int = 0
    last_error: str | None = None
    last_reading_ts: int | None = None
    bad_fields: set[str] = field(default_factory=set)


D = TypeVar("D", bound=PolledDevice[Any])


def first_poll_offset(index: int, count: int, interval: float) -> float:
    """When the `index`th of `count` devices first polls: spread over one interval, on a grid."""
    offset = interval * index / count
    grid = min(_GRID_MAX_S, max(_GRID_MIN_S, interval / _GRID_PER_INTERVAL))
    return offset - offset % grid


class Poller(Generic[D]):
    """Polls devices on their own schedules; a protocol subclass says how to read one.

    A subclass implements `_open` (group the devices by shared connection, create the clients),
    `_close`, `_read` (one attempt: a Sample, or a DeviceError), `_where` and `_frames`.
    Callbacks run in the event loop and must not block. A device is assumed available until
    `unavailable_after` consecutive polls fail; each change is reported and logged once.
    """

    label: ClassVar[str] = "polled"  # names the protocol in log lines and task names
    logger: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(
        self,
        devices: Sequence[D],
        on_reading: OnReading,
        on_availability: OnAvailability,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.on_reading = on_reading
        self.on_availability = on_availability
        self.counters = PollCounters()
        self._rng = rng or random.Random()
        self._devices: dict[str, D] = {d.id: d for d in devices}
        # The one back-off (shouwang/backoff.py), asked for the n-th wait: the counts are the
        # device's (its retry within a poll, its failed polls in a row).
        self._retry_backoff = {
            d.id: Backoff(d.config.retry_backoff_s,
                          d.config.retry_backoff_s * 2 ** max(0, d.config.retries - 1),
                          rng=self._rng)
            for d in devices
        }
        self._unavailable_backoff = {
            d.id: Backoff(d.config.poll_interval_s, d.config.unavailable_backoff_max_s,
                          rng=self._rng)
            for d in devices
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    # -- what a protocol provides ----------------------------------------------------------------

    def _open(self) -> list[list[D]]:
        """Create the shared clients; the devices grouped by the connection they share."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Close what `_open` created."""
        raise NotImplementedError

    async def _read(self, device: D) -> Sample:
        """One attempt at reading `device`; raises DeviceError when it gives no answer."""
        raise NotImplementedError

    def _where(self, device: D) -> dict[str, Any]:
        """How the device is reached, for diagnostics (bus, unit or address)."""
        raise NotImplementedError

    def _frames(self, device: D) -> Sequence[RawFrame]:
        """The last raw frames exchanged with the device, oldest first."""
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError(f"{type(self).__name__} already started")
        groups = self._open()
        self._running = True
        now = asyncio.get_running_loop().time()
        # Round robin over connections, so the devices due at one instant are on different ones.
        order = [d for group in itertools.zip_longest(*groups) for d in group if d is not None]
        for index, device in enumerate(order):
            first = now + first_poll_offset(index, len(order), device.config.poll_interval_s)
            self._tasks.append(
                asyncio.create_task(self._run(device, first), name=f"{self.label} {device.id}")
            )

    async def stop(self) -> None:
        self._running = False
        tasks, self._tasks = self._tasks, []
        pending = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            # Python 3.11's wait_for returns a reply that lands with the cancel and drops the
            # cancel; such a task sees _running and ends, or the next round cancels it again.
            _, pending = await asyncio.wait(pending, timeout=0.5)
        await self._close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Totals over all devices, plus how many are unavailable now."""
        data = self.counters.as_dict()
        data["meters"] = len(self._devices)
        data["unavailable"] = sum(1 for d in self._devices.values() if not d.available)
        return data

    def diagnostics(self, device_id: str) -> dict[str, Any]:
        """State, counters and the last raw frames of one device; KeyError if unknown."""
        d = self._devices[device_id]
        return {
            "device": d.id,
            **self._where(d),
            "available": d.available,
            "consecutive_failures": d.consecutive_failures,
            "last_error": d.last_error,
            "last_reading_ts": d.last_reading_ts,
            "bad_fields": sorted(d.bad_fields),
            "counters": d.counters.as_dict(),
            "frames": list(self._frames(d)),
        }

    # -- scheduling ------------------------------------------------------------------------------

    async def _run(self, d: D, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        slack = min(1.0, d.config.poll_interval_s / 4)
        while self._running:
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if d.available and loop.time() - deadline > slack:
                self._miss(d, 1)
            try:
                await self._poll(d)
            except Exception as err:
                # A bug must not end a device's polling for good: count it and carry on,
                # with one traceback per device rather than one per poll.
                if not d.counters.failure_reasons["internal_error"]:
                    self.logger.exception("%s meter %s: poll crashed", self.label, d.id)
                self._failed(d, DeviceError(d.id, "internal_error", repr(err), self._frames(d)))
            deadline = self._next_deadline(d, deadline, loop.time())

    def _next_deadline(self, d: D, deadline: float, now: float) -> float:
        """When to poll next, after a poll that was due at `deadline` ended at `now`."""
        cfg = d.config
        interval = cfg.poll_interval_s
        if d.available:
            deadline += interval
            if deadline < now:
                # Overran (slow bus, long retries): skip the lost slots rather than burst.
                skipped = math.floor((now - deadline) / interval) + 1
                self._miss(d, skipped)
                deadline += skipped * interval
            return deadline
        # The first poll after the device became unavailable waits one interval (jittered),
        # then the waits double up to unavailable_backoff_max_s.
        level = d.consecutive_failures - cfg.unavailable_after
        return now + self._unavailable_backoff[d.id].delay(max(1, level + 1))

    def _miss(self, d: D, n: int) -> None:
        d.counters.deadline_misses += n
        self.counters.deadline_misses += n

    # -- one poll --------------------------------------------------------------------------------

    async def _poll(self, d: D) -> None:
        d.counters.polls += 1
        self.counters.polls += 1
        attempt = 0
        while True:
            try:
                sample = await self._read(d)
                break
            except DeviceError as err:
                if isinstance(err, DecodeError):
                    self._count_decode(d, err.reason)
                if attempt >= d.config.retries or not err.retryable:
                    self._failed(d, err)
                    return
            attempt += 1
            d.counters.retries += 1
            self.counters.retries += 1
            await asyncio.sleep(self._retry_backoff[d.id].delay(attempt))

        values, problems = _check(d.profile, sample)
        self._track_fields(d, values, problems)
        if not values:
            detail = "; ".join(f"{n}: {p}" for n, (_, p) in sorted(problems.items()))
            self._failed(d, DecodeError(d.id, "no_valid_fields", detail, self._frames(d)))
            return
        raw = sample.reading
        reading = Reading(raw.id, raw.device, raw.ts, values)
        d.last_reading_ts = reading.ts
        d.counters.readings += 1
        self.counters.readings += 1
        self._succeeded(d)
        try:
            self.on_reading(reading)
        except Exception:
            self._callback_failed(d, "on_reading")

    def _count_decode(self, d: D, reason: str) -> None:
        d.counters.decode_errors[reason] += 1
        self.counters.decode_errors[reason] += 1

    def _track_fields(
        self, d: D, values: dict[str, Value], problems: dict[str, tuple[str, str]]
    ) -> None:
        for name, (reason, detail) in problems.items():
            self._count_decode(d, reason)
            if name not in d.bad_fields:
                d.bad_fields.add(name)
                self.logger.warning(
                    "%s meter %s field %s dropped: %s",
                    self.label,
                    d.id,
                    name,
                    detail,
                    extra={"device": d.id, "reason": reason, "frames": list(self._frames(d))},
                )
        for name in [n for n in d.bad_fields if n in values]:
            d.bad_fields.discard(name)
            self.logger.info("%s meter %s field %s valid again", self.label, d.id, name)

    def _failed(self, d: D, err: DeviceError) -> None:
        d.consecutive_failures += 1
        d.last_error = str(err)
        d.counters.failures += 1
        self.counters.failures += 1
        d.counters.failure_reasons[err.reason] += 1
        self.counters.failure_reasons[err.reason] += 1
        if not d.available or d.consecutive_failures < d.config.unavailable_after:
            return
        d.available = False
        reason = f"{err.reason}: {err.detail}"
        self.logger.warning(
            "%s meter %s unavailable after %d failed polls: %s",
            self.label,
            d.id,
            d.consecutive_failures,
            reason,
            extra={"device": d.id, "reason": err.reason, "frames": err.frames},
        )
        self._notify(d, False, reason)

    def _succeeded(self, d: D) -> None:
        failures, d.consecutive_failures = d.consecutive_failures, 0
        d.last_error = None
        if d.available:
            return
        d.available = True
        self.logger.info(
            "%s meter %s available again after %d failed polls",
            self.label,
            d.id,
            failures,
            extra={"device": d.id},
        )
        self._notify(d, True, f"answered after {failures} failed polls")

    def _notify(self, d: D, available: bool, reason: str) -> None:
        try:
            self.on_availability(d.id, available, reason)
        except Exception:
            self._callback_failed(d, "on_availability")

    def _callback_failed(self, d: D, name: str) -> None:
        self.counters.callback_errors += 1
        d.counters.callback_errors += 1
        # The first failure carries the traceback; a callback failing per poll must not flood.
        if self.counters.callback_errors == 1:
            self.logger.exception("%s %s callback failed (device %s)", self.label, name, d.id)


def _check(
    profile: DeviceProfile, sample: Sample
) -> tuple[dict[str, Value], dict[str, tuple[str, str]]]:
    """The values the profile accepts, and why the others were dropped."""
    values: dict[str, Value] = {}
    problems = dict(sample.problems)
    for name, value in sample.reading.values.items():
        spec = profile.fields.get(name)
        if spec is None:
            problems[name] = ("unknown_field", f"not a field of profile {profile.kind!r}")
            continue
        value = coerce(spec, value)
        problem = spec.check(value)
        if problem is None:
            values[name] = value
        else:
            reason = "wrong_type" if problem.startswith("expected") else "out_of_range"
            problems[name] = (reason, problem)
    return values, problems


def coerce(spec: FieldSpec, value: Value) -> Value:
    """A number in the profile's type: 87 for an int field, 87.0 for a float one."""
    if spec.type == "float" and isinstance(value, int):
        return float(value)
    if spec.type == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.type == "bool" and isinstance(value, int | float):
        return value != 0
    return value
