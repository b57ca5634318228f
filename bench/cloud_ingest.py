"""Cloud ingest throughput and alert latency with 1, 2 and 4 ingest worker processes.

A publisher process sends what gateways send (telemetry messages of many readings, like
`edge/daemon.py::_telemetry_row`) as fast as QoS 1 allows to a cloud broker, and meanwhile
a second publisher process sends an SOS every 20 ms; N `shouwang cloud run` data workers
(`streams: [data]`, no API) share the telemetry subscription, and one more process takes the
alerts and serves the API (`streams: [alerts]`), as README recommends. Measured:
readings stored per second (first publish → last reading countable in the store) and alert
latency (envelope ts, stamped at publish → the alert row's `received_ms`, stamped in the
inserting transaction just before it commits); then alerts stored per second from a burst of
2,000 published as fast as QoS 1 allows. Baseline in the same run: the same readings as
raw line-protocol POSTs straight to VictoriaMetrics (4 concurrent, one POST per message), the
median of three runs.

    .venv/bin/python bench/cloud_ingest.py --messages 300 --readings 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from harness import ROOT, bench_tls, pct  # type: ignore[import-not-found]
from sqlalchemy import func, select

from cloud.schema import alerts
from cloud.store import Store
from cloud.telemetry.sql import SqlTelemetryStore
from cloud.telemetry.victoria import VictoriaMetricsConfig, VictoriaMetricsStore, _lines
from shouwang.protocol import make_envelope, site_up_topic
from shouwang.services import Mosquitto, Postgres, VictoriaMetrics, free_port, wait_port

ALERT_GAP_S = 0.02  # between two SOS alerts while telemetry floods in
WINDOW = 200  # telemetry messages in flight from the publisher
CA_ENV = "SHOUWANG_BENCH_CA_FILE"  # the publishers (child processes) verify the broker with it
ALERT_BURST = 2000  # alerts in the burst after the flood, for alerts/s
DEVICES = 50
T_BASE = 1_795_000_000_000


def telemetry_payloads(site: str, messages: int, per_message: int) -> list[bytes]:
    out = []
    for m in range(messages):
        readings = [
            {
                "id": f"{site}-{m}-{i}",
                "device": f"wear-{i % DEVICES:04d}",
                # Distinct (device, ts) per reading: VictoriaMetrics keys samples by them.
                "ts": T_BASE + m * 1000 + i,
                "values": {"heart_rate": 60 + i % 40, "spo2": 95 + i % 5, "battery": 80},
            }
            for i in range(per_message)
        ]
        env = make_envelope(
            site=site, device="gateway", kind="telemetry", body={"readings": readings}
        )
        out.append(env.to_bytes())
    return out


def alert_payload(site: str, n: int) -> bytes:
    body = {
        "type": "sos", "severity": "critical", "subject": f"resident:r-{n}",
        "dedup_key": f"resident:r-{n}|sos", "life_safety": True, "source_id": f"m-{n}",
    }
    return make_envelope(site=site, device=f"btn-{n}", kind="alert", body=body).to_bytes()


def flood(port: int, client_id: str, topic: str, payloads: list[bytes]) -> None:
    """Publish `payloads` as fast as QoS 1 allows, WINDOW in flight; prints the start time
    and the CPU used so far (making the payloads), then, once all are acknowledged, the CPU."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set(ca_certs=os.environ[CA_ENV])
    client.max_inflight_messages_set(WINDOW)
    # Never more than the window queued in paho: it walks its whole queue on every PUBACK, so
    # publishing thousands at once made this load generator the busiest process of the bench.
    window = threading.Semaphore(WINDOW)
    client.on_publish = lambda *_: window.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    print(json.dumps({"started": time.time(), "cpu_s": time.process_time()}), flush=True)
    for p in payloads:
        window.acquire()
        client.publish(topic, p, qos=1)
    for _ in range(WINDOW):
        window.acquire(timeout=120)
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"cpu_s": time.process_time()}), flush=True)


def publish(port: int, site: str, messages: int, per_message: int) -> None:
    """The telemetry publisher process: a flood on one connection until all is acknowledged;
    the bench starts the alerts when it prints its start."""
    payloads = telemetry_payloads(site, messages, per_message)
    flood(port, f"pub-{site}-telemetry", site_up_topic(site, "telemetry"), payloads)


def publish_alerts(port: int, site: str) -> None:
    """The alert publisher process, like a second gateway: from a "go" line on stdin, an SOS
    every ALERT_GAP_S until the next line; prints how many it sent once all are acknowledged."""
    import select as select_

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{site}-alerts")
    client.tls_set(ca_certs=os.environ[CA_ENV])
    client.connect("127.0.0.1", port)
    client.loop_start()
    print("ready", flush=True)
    sys.stdin.readline()  # "go": the telemetry flood has started
    infos = []
    while not select_.select([sys.stdin], [], [], ALERT_GAP_S)[0]:
        # Made at send time: the envelope's ts is the publish time.
        payload = alert_payload(site, len(infos))
        infos.append(client.publish(site_up_topic(site, "alert"), payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"alerts": len(infos)}))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publish_alert_burst(port: int, site: str, n: int) -> None:
    """Alerts as fast as QoS 1 allows (a storm from many gateways)."""
    payloads = [alert_payload(site, k) for k in range(n)]
    flood(port, f"pub-{site}-burst", site_up_topic(site, "alert"), payloads)


async def alert_rate(run: Run, store: Store, site: str, n: int) -> float:
    """Alerts stored per second from a burst of `n` (every alert process stores each one)."""
    pub = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--publish-burst", str(run.broker.port), site, str(n),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    assert pub.stdout is not None
    started = json.loads(await pub.stdout.readline())["started"]
    query = select(func.count()).select_from(alerts).where(alerts.c.site == site)
    stored, deadline = 0, time.monotonic() + 300
    while stored < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        async with store.engine.connect() as conn:
            stored = int((await conn.execute(query)).scalar_one())
    done = time.time()
    await pub.wait()
    return stored / (done - started)


class Run:
    """One broker, N workers on one database (and maybe VictoriaMetrics), one publisher."""

    def __init__(self, work: Path, url: str, vm: VictoriaMetrics | None, workers: int) -> None:
        self.work, self.url, self.vm, self.workers = work, url, vm, workers
        # TLS only, as deployed: the publishers and the workers verify it with the bench's CA.
        self.tls = bench_tls(work)
        os.environ[CA_ENV] = str(self.tls.ca_file)
        self.broker = Mosquitto(work / "broker", name="bench cloud broker", tls=self.tls)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    def start(self) -> None:
        """The deployment README recommends: one process for the alerts (and the API), then
        the data workers (no API) that share the telemetry."""
        self.broker.start()
        roles = [("alerts", {"streams": ["alerts"]})] + [
            (f"data-{n}", {"streams": ["data"], "api": False}) for n in range(self.workers)
        ]
        for name, role in roles:
            port = free_port()
            config: dict[str, Any] = {
                "broker": {"port": self.broker.port, "tls": {"ca_file": str(self.tls.ca_file)}},
                "http": {"port": port},
                "database_url": self.url,
                "worker_id": f"bench-{name}",
                # Lab mode: sites and buttons are made up per run, not imported.
                "require_registered_sites": False,
                **role,
            }
            if self.vm is not None:
                config["telemetry"] = {"backend": "victoriametrics", "url": self.vm.url}
            path = self.work / f"worker-{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            with open(self.work / f"worker-{name}.log", "ab") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "shouwang", "cloud", "run", "--config", str(path)],
                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                    env={**os.environ, "SHOUWANG_LOG_LEVEL": "WARNING"},
                ))
            self.ports.append(port)
            # One at a time: the first migrates the database, the others find it at head.
            wait_port("127.0.0.1", port, 60, self.procs[-1])

    async def wait_subscribed(self) -> None:
        async with aiohttp.ClientSession() as http:
            for port in self.ports:
                for _ in range(300):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as res:
                        if (await res.json())["broker_connected"]:
                            break
                    await asyncio.sleep(0.05)

    def cpu(self) -> dict[str, float]:
        """CPU seconds each part used so far, from /proc (Linux)."""
        data = sum(cpu_s(p.pid) for p in self.procs[1:])
        assert self.broker.proc is not None
        out = {"alerts worker": cpu_s(self.procs[0].pid), "data workers": data,
               "broker": cpu_s(self.broker.proc.pid)}
        if self.vm is not None:
            assert self.vm.proc is not None
            out["victoria-metrics"] = cpu_s(self.vm.proc.pid)
        return out

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=20)
        self.broker.stop()


async def measure(run: Run, site: str, messages: int, per_message: int) -> dict[str, Any]:
    await run.wait_subscribed()
    before = run.cpu()
    store = await Store.connect(run.url)
    vm_store = (
        VictoriaMetricsStore(VictoriaMetricsConfig(backend="victoriametrics", url=run.vm.url))
        if run.vm is not None
        else None
    )
    telemetry = vm_store or SqlTelemetryStore(store)
    try:
        sos = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--publish-alerts", str(run.broker.port), site,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        assert sos.stdout is not None
        assert sos.stdin is not None
        await sos.stdout.readline()  # connected
        pub = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--publish", str(run.broker.port), site,
            str(messages), str(per_message), stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        assert pub.stdout is not None
        first = json.loads(await pub.stdout.readline())
        started = first["started"]
        # Alerts only while the flood runs: their latency is the one under load.
        sos.stdin.write(b"go\n")
        await sos.stdin.drain()
        total = messages * per_message
        stored = 0
        deadline = time.monotonic() + 600
        while stored < total and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if vm_store is not None:
                await vm_store.flush()
            stored = await telemetry.count(site)
        done = time.time()
        cpu = {k: v - before[k] for k, v in run.cpu().items()}  # before anything stops
        cpu["publisher"] = json.loads(await pub.stdout.readline())["cpu_s"] - first["cpu_s"]
        await pub.wait()
        alerts_out, _ = await sos.communicate(b"stop\n")
        expected_alerts = json.loads(alerts_out)["alerts"]
        async with store.engine.connect() as conn:  # alerts come on their own stream
            for _ in range(100):
                query = select(alerts.c.id).where(alerts.c.site == site)
                n = len((await conn.execute(query)).all())
                if n >= expected_alerts:
                    break
                await asyncio.sleep(0.1)
        async with store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(alerts.c.ts, alerts.c.received_ms).where(alerts.c.site == site)
                )
            ).all()
        latencies = [float(received - ts) for ts, received in rows]
        burst = await alert_rate(run, store, f"{site}-burst", ALERT_BURST)
        return {
            "points_s": stored / (done - started),
            "stored": stored,
            "total": total,
            "alerts": len(rows),
            "alerts_expected": expected_alerts,
            "p50": pct(latencies, 50) if latencies else float("nan"),
            "p99": pct(latencies, 99) if latencies else float("nan"),
            "cpu": cpu,
            "alerts_s": burst,
        }
    finally:
        if vm_store is not None:
            await vm_store.close()
        await store.close()


async def raw_vm(vm: VictoriaMetrics, site: str, messages: int, per_message: int) -> float:
    """Baseline: the same readings as line protocol, one POST per message, 4 at a time."""
    bodies = []
    for payload in telemetry_payloads(site, messages, per_message):
        readings = json.loads(payload)["body"]["readings"]
        bodies.append("\n".join(line for r in readings for line in _lines(site, r)).encode())
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def poster(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with http.post(f"{vm.url}/api/v2/write?precision=ms", data=body) as res:
                assert res.status == 204, await res.text()

    started = time.time()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(poster(http) for _ in range(4)))
        async with http.get(f"{vm.url}/internal/force_flush") as res:
            res.raise_for_status()
    return messages * per_message / (time.time() - started)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="shouwang-bench-ingest-"))
    pg = Postgres() if "postgresql" in args.backends or "victoriametrics" in args.backends else None
    vm = VictoriaMetrics(work / "vm") if "victoriametrics" in args.backends else None
    if pg is not None:
        pg.start()
    if vm is not None:
        vm.start()
    results: list[tuple[str, int, dict[str, Any]]] = []
    baseline = None
    try:
        if vm is not None:
            # Three times on fresh series, the median: a single short run moved by half.
            runs = [await raw_vm(vm, f"raw-{k}", args.messages, args.readings) for k in range(3)]
            baseline = sorted(runs)[1]
            print(f"  baseline: {', '.join(f'{r:.0f}' for r in runs)} points/s", file=sys.stderr)
        for backend in args.backends:
            for workers in args.workers:
                name = f"{backend}-{workers}"
                run_dir = work / name
                run_dir.mkdir()
                if backend == "sqlite":
                    url = f"sqlite+aiosqlite:///{run_dir}/cloud.sqlite"
                else:
                    assert pg is not None
                    url = pg.create_database(name.replace("-", "_"))
                run = Run(run_dir, url, vm if backend == "victoriametrics" else None, workers)
                run.start()
                try:
                    result = await measure(run, name, args.messages, args.readings)
                finally:
                    run.stop()
                results.append((backend, workers, result))
                print(f"  {name}: {result['points_s']:.0f} points/s", file=sys.stderr)
    finally:
        if vm is not None:
            vm.stop()
        if pg is not None:
            pg.stop()
    print(f"\n{args.messages} telemetry messages × {args.readings} readings, "
          f"an SOS every {ALERT_GAP_S * 1000:.0f} ms meanwhile; {os.cpu_count()} CPUs\n")
    print("| store | data workers (+1 alerts) | readings/s | stored | alerts stored "
          "| alert p50 ms | alert p99 ms | alerts/s (burst) |")
    print("|---|---|---|---|---|---|---|---|")
    if baseline is not None:
        print(f"| raw line protocol → VictoriaMetrics (baseline, median of 3) | 4 POSTs "
              f"| {baseline:,.0f} | | | | | |")
    for backend, workers, r in results:
        telemetry = {"victoriametrics": "PostgreSQL + VictoriaMetrics"}.get(backend, backend)
        ratio = f" ({r['points_s'] / baseline:.2f}×)" if baseline else ""
        print(f"| {telemetry} | {workers} | {r['points_s']:,.0f}{ratio} "
              f"| {r['stored']:.0f}/{r['total']:.0f} | {r['alerts']:.0f}/{r['alerts_expected']:.0f}"
              f" | {r['p50']:.0f} | {r['p99']:.0f} | {r['alerts_s']:,.0f} |")
    parts = list(dict.fromkeys(k for _, _, r in results for k in r["cpu"]))
    print("\nCPU per reading stored, µs (each part's CPU seconds during the flood / readings):\n")
    print("| store | n | " + " | ".join(parts) + " |")
    print("|---|---|" + "---|" * len(parts))
    for backend, workers, r in results:
        cells = " | ".join(f"{r['cpu'][k] / r['total'] * 1e6:.1f}" if k in r["cpu"] else ""
                           for k in parts)
        print(f"| {backend} | {workers} | {cells} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        port, site, messages, per_message = sys.argv[2:6]
        publish(int(port), site, int(messages), int(per_message))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--publish-burst":
        publish_alert_burst(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--publish-alerts":
        publish_alerts(int(sys.argv[2]), sys.argv[3])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300, help="telemetry messages")
    parser.add_argument("--readings", type=int, default=100, help="readings per message")
    parser.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")],
                        default=[1, 2, 4], help="worker counts, e.g. 1,2,4")
    parser.add_argument("--backends", type=lambda s: s.split(","),
                        default=["sqlite", "postgresql", "victoriametrics"],
                        help="sqlite, postgresql, victoriametrics (PostgreSQL for alerts)")
    asyncio.run(main(parser.parse_args()))
