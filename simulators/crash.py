"""Presses while the gateway is killed: many buttons pressed in turn, the edge killed at random.

For testers and the crash scenario (tests/scenarios/test_crash_presses.py, bench/crash_presses.py):
`press_in_turn` presses each of N buttons once, one every `every_s`, and records each press
the gateway's broker acknowledged; `EdgeKiller` runs `shouwang edge run` as a child process
and kills it with SIGKILL at random points while that goes on. Afterwards every accepted
press must be exactly one alert in the cloud.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from shouwang.config import BrokerConfig
from shouwang.ids import new_id
from shouwang.mqtt import MqttClient, MqttError
from shouwang.protocol import device_topic, make_envelope

ROOT = Path(__file__).resolve().parents[1]


def buttons(n: int) -> list[str]:
    return [f"btn-{i:05d}" for i in range(n)]


async def press_in_turn(
    broker: BrokerConfig, devices: list[str], every_s: float, accepted: dict[str, str]
) -> None:
    """Press each device once, in turn; `accepted` maps device → press id once the broker
    acknowledged it (a press it did not take would be pressed again by its person)."""
    client = MqttClient(broker, client_id=f"crash-presser-{new_id()[-8:]}")
    await client.start()
    await client.wait_connected(10)
    try:
        for device in devices:
            env = make_envelope(site=None, device=device, kind="event", body={"event": "press"})
            try:
                await client.publish(device_topic(device, "event"), env.to_bytes(), timeout=10)
                accepted[device] = env.id
            except MqttError:
                pass
            await asyncio.sleep(every_s)
    finally:
        await client.close()


class EdgeKiller:
    """`shouwang edge run` as a child process, killed with SIGKILL and started again."""

    def __init__(self, config: Path, log: Path, seed: int) -> None:
        self.config = config
        self.log = log
        self.rng = random.Random(seed)
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    async def start(self) -> None:
        def spawn() -> subprocess.Popen[bytes]:
            with open(self.log, "ab") as out:
                return subprocess.Popen(
                    [sys.executable, "-m", "shouwang", "edge", "run", "--config",
                     str(self.config)],
                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                )

        self.proc = await asyncio.to_thread(spawn)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.kills += 1
        if self.proc is not None:
            await asyncio.to_thread(self.proc.wait)

    async def kill_now_and_then(self, times: int, low_s: float, high_s: float) -> None:
        """Let it run a random while, kill it, start it again; `times` times."""
        for _ in range(times):
            await asyncio.sleep(self.rng.uniform(low_s, high_s))
            await self.kill()
            await self.start()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait)
