"""Bench: one ModbusPoller reading N simulated meters, next to a plain pymodbus polling loop."""

# Usage: python bench/modbus_poll.py --meters 500 --servers 10 --interval 10 --duration 30
# The simulators run in a child process, so the CPU figures are the poller's alone.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
from dataclasses import dataclass

import psutil
import pymodbus
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType

from edge.adapters.modbus import ModbusMeterConfig, ModbusPoller
from shouwang.profiles import load_profiles
from shouwang.records import Reading
from shouwang.registers import plan_reads

_LISTENING = re.compile(r"modbus_meter listening .* port=(\d+) ")
_FRAMER_TYPES = {"tcp": FramerType.SOCKET, "rtu_over_tcp": FramerType.RTU}


@dataclass
class Row:
    runner: str
    meters: int
    interval_s: float
    wall_s: float
    cpu_s: float
    reads: int
    polls: int
    deadline_misses: int
    failures: int

    def cells(self) -> list[str]:
        return [
            self.runner,
            str(self.meters),
            f"{self.interval_s:g}",
            f"{self.wall_s:.1f}",
            f"{self.reads / self.wall_s:.1f}",
            f"{self.polls / self.wall_s:.1f}",
            str(self.deadline_misses),
            str(self.failures),
            f"{100 * self.cpu_s / self.wall_s:.2f}",
            f"{1e6 * self.cpu_s / max(self.reads, 1):.0f}",
        ]


HEADER = [
    "runner",
    "meters",
    "interval s",
    "wall s",
    "reads/s",
    "polls/s",
    "deadline misses",
    "failures",
    "CPU % of one core",
    "CPU µs/read",
]


async def start_simulators(
    args: argparse.Namespace,
) -> tuple[asyncio.subprocess.Process, list[int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.modbus_meter",
        "--port",
        "0",
        "--servers",
        str(args.servers),
        "--meters",
        str(args.meters // args.servers),
        "--profile",
        args.profile,
        "--framer",
        args.framer,
        "--seed",
        "1",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    ports: list[int] = []
    try:
        async with asyncio.timeout(30):
            while len(ports) < args.servers:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("simulator exited before listening")
                if match := _LISTENING.search(line):
                    ports.append(int(match.group(1)))
    except BaseException:
        await stop_simulators(proc)
        raise
    return proc, ports


async def stop_simulators(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run_poller(args: argparse.Namespace, ports: list[int]) -> Row:
    per_server = args.meters // args.servers
    meters = [
        ModbusMeterConfig(
            id=f"m{s}-{unit}",
            profile=args.profile,
            host="127.0.0.1",
            port=port,
            framer=args.framer,
            unit_id=unit,
            poll_interval_s=args.interval,
            timeout_s=2.0,
            unavailable_backoff_max_s=max(300.0, args.interval),
        )
        for s, port in enumerate(ports)
        for unit in range(1, per_server + 1)
    ]
    readings = 0

    def on_reading(_reading: Reading) -> None:
        nonlocal readings
        readings += 1

    poller = ModbusPoller(meters, load_profiles(), on_reading, lambda *_: None)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await poller.start()
    try:
        await asyncio.sleep(args.duration)
        stats = poller.stats()
    finally:
        await poller.stop()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Row(
        "ModbusPoller",
        len(meters),
        args.interval,
        wall,
        cpu,
        stats["requests"],
        stats["polls"],
        stats["deadline_misses"],
        stats["failures"],
    )


async def run_baseline(args: argparse.Namespace, ports: list[int]) -> Row:
    """The simplest correct loop: per bus, read every meter back to back once an interval."""
    per_server = args.meters // args.servers
    rmap = load_profiles()[args.profile].modbus
    assert rmap is not None
    plan = plan_reads(rmap)
    clients = [
        AsyncModbusTcpClient(
            "127.0.0.1", port=port, framer=_FRAMER_TYPES[args.framer], timeout=2.0, retries=0
        )
        for port in ports
    ]
    reads = polls = misses = failures = 0
    running = True

    async def bus_loop(client: AsyncModbusTcpClient) -> None:
        nonlocal reads, polls, misses, failures
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while running:
            for unit in range(1, per_server + 1):
                polls += 1
                for req in plan:
                    read = (
                        client.read_holding_registers
                        if req.function == "holding"
                        else client.read_input_registers
                    )
                    response = await read(req.address, count=req.count, device_id=unit)
                    reads += 1
                    failures += response.isError()
            deadline += args.interval
            if loop.time() > deadline:
                misses += 1
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    wall0, cpu0 = time.perf_counter(), time.process_time()
    for client in clients:
        await client.connect()
    tasks = [asyncio.create_task(bus_loop(c)) for c in clients]
    try:
        await asyncio.sleep(args.duration)
    finally:
        running = False
        pending = set(tasks)
        while pending:  # Python 3.11's wait_for can drop a cancel that races a reply
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for client in clients:
            client.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    meters = per_server * len(ports)
    return Row(
        "raw pymodbus loop", meters, args.interval, wall, cpu, reads, polls, misses, failures
    )


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    proc, ports = await start_simulators(args)
    sim = psutil.Process(proc.pid)
    try:
        sim_cpu0 = sum(sim.cpu_times()[:2])
        poller = await run_poller(args, ports)
        baseline = await run_baseline(args, ports)
        sim_cpu = sum(sim.cpu_times()[:2]) - sim_cpu0
    finally:
        await stop_simulators(proc)
    print(
        f"python {sys.version.split()[0]}, pymodbus {pymodbus.__version__}, "
        f"{args.servers} {args.framer} servers x {args.meters // args.servers} {args.profile} "
        f"meters, reads of {len(plan_reads(load_profiles()[args.profile].modbus))} request(s) "  # type: ignore[arg-type]
        "per poll"
    )
    print(table([HEADER, poller.cells(), baseline.cells()]))
    total_wall = poller.wall_s + baseline.wall_s
    print(
        f"simulators (separate process, both runs): {100 * sim_cpu / total_wall:.2f} % of one core"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=500, help="simulated meters in all")
    parser.add_argument("--servers", type=int, default=10, help="simulator servers (buses)")
    parser.add_argument("--interval", type=float, default=60.0, help="poll interval, seconds")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per runner")
    parser.add_argument("--profile", default="water_meter", help="device profile kind")
    parser.add_argument("--framer", choices=sorted(_FRAMER_TYPES), default="tcp")
    args = parser.parse_args(argv)
    if not 1 <= args.meters // args.servers <= 247:
        parser.error("meters per server must be within 1..247")
    return args


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
