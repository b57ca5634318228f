"""Rules throughput: the engine alone, and the whole edge pipeline against raw paho receive.

1. Engine alone (one core, this process): `RuleEngine.observe_reading` over pre-built readings
   of a mixed community (wearables with vitals, water meters, gas detectors, door contacts),
   with a trivial loop over the same readings as the baseline. Target ≥ 50k readings/s.
2. Whole edge pipeline: a backlog of wearable telemetry queued at the edge broker for the
   edge's persistent session is drained by the edge daemon (parse, validate, liveness, rules,
   outbox transaction, ack, uplink). Baseline in the same run, same broker, same backlog: a
   bare paho client with its own persistent session receiving it. Target ≥ 0.7× raw. The
   brokers speak TLS only, as deployed, and every client verifies them.

   A second reference, not the target's: the edge's own MQTT client (`shouwang.mqtt`) alone,
   receiving the same backlog with no pipeline; the gap between it and the edge is what the
   pipeline costs, whatever the transport.

   The drains run in rotation `--rounds` times (raw, client, edge, edge without rules, ...)
   and the table shows each one's median with its range, so a neighbour's load on this shared
   machine moves every column alike instead of whichever ran in the noisy second.

    .venv/bin/python bench/rules.py --readings 200000 --messages 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import broker_config, paho_connect, tls_broker  # type: ignore[import-not-found]  # noqa: E402

from edge.config import DeviceBinding, EdgeConfig  # noqa: E402
from edge.daemon import EdgeDaemon  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402
from edge.rules.config import (  # noqa: E402
    Binding,
    RulesSettings,
    builtin_rules,
    profile_rules,
)
from edge.rules.engine import RuleEngine  # noqa: E402
from edge.rules.residents import Resident  # noqa: E402
from edge.rules.suppression import BROKER  # noqa: E402
from shouwang import heap  # noqa: E402
from shouwang.clock import SystemClock  # noqa: E402
from shouwang.config import HttpConfig  # noqa: E402
from shouwang.mqtt import MqttClient  # noqa: E402
from shouwang.profiles import load_profiles  # noqa: E402
from shouwang.protocol import device_topic, make_envelope  # noqa: E402
from shouwang.records import Reading  # noqa: E402
from shouwang.services import Mosquitto  # noqa: E402

HOUSEHOLDS = 200
DRAIN_TIMEOUT_S = 600  # a drain that has not finished by then is stuck, not slow


def community() -> tuple[list[Binding], list[Resident]]:
    bindings, residents = [], []
    for i in range(HOUSEHOLDS):
        rid = f"r-{i:04d}"
        tags = ["living_alone", "elderly"] if i % 3 == 0 else ["elderly"]
        if i % 10 == 0:
            tags.append("dementia")
        residents.append(Resident(id=rid, tags=tags))
        for kind, prefix in (("wearable", "w"), ("water_meter", "wm"), ("gas_detector", "gas"),
                             ("door_contact", "door")):
            bindings.append(Binding(f"{prefix}-{i:04d}", kind, rid, f"loc/{i}", BROKER))
    return bindings, residents


def readings(n: int, bindings: list[Binding], rng: random.Random) -> list[Reading]:
    out = []
    ts = 1_767_225_600_000
    steps: dict[str, int] = {}
    for k in range(n):
        b = bindings[k % len(bindings)]
        if b.profile == "wearable":
            steps[b.id] = steps.get(b.id, 0) + rng.randint(0, 30)
            values = {"heart_rate": rng.randint(55, 100), "spo2": rng.randint(93, 99),
                      "steps": steps[b.id], "battery": 80, "worn": True, "charging": False}
        elif b.profile == "water_meter":
            values = {"flow": rng.choice([0.0, 0.0, 0.0, 0.3]), "total": 100.0 + k / 1e5}
        elif b.profile == "gas_detector":
            values = {"lel": rng.uniform(0, 5), "mains": True}
        else:
            values = {"state": rng.choice(["open", "closed"]), "battery": 90}
        out.append(Reading(f"m{k}", b.id, ts + k, values))
    return out


def bench_engine(n: int) -> list[list[str]]:
    bindings, residents = community()
    rows = readings(n, bindings, random.Random(1))
    engine = RuleEngine("bench", bindings, load_profiles(), SystemClock(), residents=residents)
    # Baseline: what any per-reading code costs at least (a lookup and a look at each value).
    known = {b.id: b for b in bindings}
    t0 = time.perf_counter()
    touched = 0
    for r in rows:
        if r.device in known:
            touched += sum(1 for v in r.values.values() if v is not None)
    base_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    alerts = 0
    for r in rows:
        alerts += len(engine.observe_reading(r).alerts)
    engine_s = time.perf_counter() - t0
    rules = sum(len(v) for v in engine._readers.values()) / len(bindings)
    # The ingest step around it: topic, JSON envelope, profile checks, then the same engine.
    devices = {b.id: DeviceBinding(id=b.id, profile=b.profile, resident=b.resident)
               for b in bindings}
    pipeline = Pipeline("bench", devices, load_profiles(), 64 * 1024, RuleEngine(
        "bench", bindings, load_profiles(), SystemClock(), residents=residents))
    messages = [
        (device_topic(r.device, "telemetry"),
         make_envelope(site=None, device=r.device, kind="telemetry", body=r.values).to_bytes())
        for r in rows[: n // 4]
    ]
    t0 = time.perf_counter()
    for topic, payload in messages:
        pipeline.process(topic, payload)
    pipe_s = time.perf_counter() - t0
    m = len(messages)
    return [
        ["trivial loop (baseline)", f"{n}", f"{base_s:.3f}", f"{n / base_s:,.0f}", "1.00×"],
        [f"rule engine ({len(engine.rules)} rules, {rules:.1f} per device, {alerts} alerts)",
         f"{n}", f"{engine_s:.3f}", f"{n / engine_s:,.0f}", f"{base_s / engine_s:.2f}×"],
        ["pipeline.process: topic, JSON, profile checks, rules", f"{m}", f"{pipe_s:.3f}",
         f"{m / pipe_s:,.0f}", f"{base_s / n * m / pipe_s:.2f}×"],
    ]


def _props(expiry: int) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = expiry
    return p


def forget_session(broker: Mosquitto, client_id: str) -> None:
    """End a persistent session and what it queued: each drain starts from its own backlog.
    Left alone, every session would also be sent the other drains' backlogs, and later rounds
    would drain those too, through a broker fanning each message out to stale sessions."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    paho_connect(c, broker, clean_start=True, properties=_props(0))
    c.disconnect()
    c.loop_stop()


def backlog(broker: Mosquitto, n: int, devices: list[str]) -> None:
    """Publish `n` QoS 1 wearable telemetry messages, at most 1,000 in flight."""
    window = threading.Semaphore(1000)
    done = threading.Event()
    acked = 0

    def on_publish(c: paho.Client, u: object, mid: int, rc: object, p: object) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked == n:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher",
                    protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.on_publish = on_publish
    paho_connect(c, broker)
    rng = random.Random(2)
    for k in range(n):
        d = devices[k % len(devices)]
        body = {"heart_rate": rng.randint(55, 100), "spo2": rng.randint(93, 99), "worn": True,
                "battery": 80, "steps": k}
        env = make_envelope(site=None, device=d, kind="telemetry", body=body)
        window.acquire()
        c.publish(device_topic(d, "telemetry"), env.to_bytes(), qos=1)
    finished = done.wait(600)
    c.disconnect()
    c.loop_stop()
    if not finished:
        raise SystemExit(f"bench: backlog: {acked} of {n} acknowledged in 600 s")


def raw_receive(broker: Mosquitto, n: int, devices: list[str]) -> float:
    """A bare paho subscriber's receive rate over the same backlog (auto-acked QoS 1)."""
    got = 0
    done = threading.Event()
    first: list[float] = []

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        nonlocal got
        if not first:
            first.append(time.perf_counter())
        got += 1
        if got == n:
            done.set()

    def client() -> paho.Client:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
        c.on_message = on_message
        paho_connect(c, broker, clean_start=False, properties=_props(3600))
        return c

    c = client()
    c.subscribe("dev/+/telemetry", qos=1)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    backlog(broker, n, devices)
    # From before the connection, TLS handshake included, as for the edge's drain below.
    start = time.perf_counter()
    c = client()
    finished = done.wait(DRAIN_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    forget_session(broker, "bench-raw")
    if not finished:
        raise SystemExit(f"bench: raw subscriber: {got} of {n} received in {DRAIN_TIMEOUT_S} s")
    return n / elapsed


async def client_receive(broker: Mosquitto, n: int, devices: list[str]) -> float:
    """The edge's own MQTT receive path alone (`MqttClient`, auto-acked QoS 1, no pipeline):
    what the edge's drain would be if its pipeline cost nothing."""

    def client() -> MqttClient:
        c = MqttClient(broker_config(broker), client_id="bench-client", persistent=True,
                       session_expiry_s=3600)
        c.subscribe("dev/+/telemetry", 1)
        return c

    c = client()
    await c.start()
    await c.wait_connected(10)
    await asyncio.sleep(0.5)
    await c.close()
    await asyncio.to_thread(backlog, broker, n, devices)
    c = client()
    start = time.perf_counter()
    await c.start()
    got = 0
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while got < n:
                await c.messages()
                got += 1 + len(c.drain(n))
        return n / (time.perf_counter() - start)
    except TimeoutError:
        raise SystemExit(f"bench: MqttClient: {got} of {n} received in {DRAIN_TIMEOUT_S} s "
                         f"(connected: {c.connected})") from None
    finally:
        await c.close()
        await asyncio.to_thread(forget_session, broker, "bench-client")


async def edge_receive(
    edge: Mosquitto, cloud: Mosquitto, work: Path, n: int, *, rules_on: bool = True
) -> float:
    """The edge daemon's drain rate; `rules_on=False` disables every rule (same pipeline)."""
    bindings, residents = community()
    site = "bench-rules" if rules_on else "bench-no-rules"
    settings = RulesSettings()
    if not rules_on:
        profiles = load_profiles()
        every = sorted({**profile_rules(profiles), **builtin_rules(profiles)})
        path = work / "no-rules.yaml"
        path.write_text(yaml.safe_dump({"disable": every}))
        settings = RulesSettings(file=path)
    config = EdgeConfig(
        site=site,
        edge_broker=broker_config(edge),
        cloud_broker=broker_config(cloud),
        data_dir=work / site,
        http=HttpConfig(port=0),
        devices=[DeviceBinding(id=b.id, profile=b.profile, resident=b.resident)
                 for b in bindings],
        residents=residents,
        rules=settings,
    )
    devices = [b.id for b in bindings if b.profile == "wearable"]
    daemon = EdgeDaemon(config)  # the first run creates the persistent session, then stops
    await daemon.start()
    await daemon.edge_mqtt.wait_connected(10)
    await asyncio.sleep(0.5)
    await daemon.stop()
    await asyncio.to_thread(backlog, edge, n, devices)
    daemon = EdgeDaemon(config)
    start = time.perf_counter()
    await daemon.start()
    heap.settle()  # as `shouwang edge run` does after start-up
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while daemon.rules.counts["readings"] < n:
                await asyncio.sleep(0.01)
        return n / (time.perf_counter() - start)
    except TimeoutError:
        raise SystemExit(
            f"bench: edge daemon: {daemon.rules.counts['readings']} of {n} readings in "
            f"{DRAIN_TIMEOUT_S} s (edge broker connected: {daemon.edge_mqtt.connected})"
        ) from None
    finally:
        await daemon.stop()
        await asyncio.to_thread(forget_session, edge, f"edge-{site}")


def table(rows: list[list[str]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=200_000, help="readings for the engine")
    ap.add_argument("--messages", type=int, default=20_000, help="backlog for the pipeline")
    ap.add_argument("--rounds", type=int, default=3, help="drains of each kind, in rotation")
    ap.add_argument("--only", choices=["raw", "client", "edge", "bare"], action="append",
                    help="run only these drains (repeatable), e.g. to profile the edge's")
    args = ap.parse_args()
    only = set(args.only or ["raw", "client", "edge", "bare"])
    if args.only is None:
        print(table(bench_engine(args.readings),
                    ["engine alone", "readings", "seconds", "readings/s", "time vs baseline"]))
    work = Path(tempfile.mkdtemp(prefix="shouwang-bench-rules-"))
    edge = tls_broker(work / "edge-broker", "edge broker")
    cloud = tls_broker(work / "cloud-broker", "cloud broker")
    edge.start()
    cloud.start()
    raws: list[float] = []
    rates: list[float] = []
    bares: list[float] = []
    clients: list[float] = []
    try:
        devices = [f"w-{i:04d}" for i in range(HOUSEHOLDS)]
        for _ in range(args.rounds):
            if "raw" in only:
                raws.append(
                    await asyncio.to_thread(raw_receive, edge, args.messages, devices)
                )
            if "client" in only:
                clients.append(await client_receive(edge, args.messages, devices))
            if "edge" in only:
                rates.append(await edge_receive(edge, cloud, work, args.messages))
            if "bare" in only:
                bares.append(await edge_receive(edge, cloud, work, args.messages, rules_on=False))
    finally:
        edge.stop()
        cloud.stop()
    raw = statistics.median(raws) if raws else None
    own = statistics.median(clients) if clients else None

    def row(name: str, rates: list[float]) -> list[str]:
        median = statistics.median(rates)
        spread = f"{min(rates):,.0f}–{max(rates):,.0f}"
        ratios = [f"{median / base:.2f}×" if base else "–" for base in (raw, own)]
        return [name, f"{args.messages}", f"{median:,.0f}", spread, *ratios]

    rows = [("raw paho subscriber (baseline)", raws),
            ("MqttClient subscriber: the edge's receive path, no pipeline", clients),
            ("edge daemon, every rule disabled", bares),
            ("edge daemon: parse, validate, liveness, rules, outbox, ack", rates)]
    print()
    print(table(
        [row(name, r) for name, r in rows if r],
        ["backlog drain, same broker", "messages", f"msgs/s (median of {args.rounds})",
         "range", "vs raw", "vs MqttClient"],
    ))


if __name__ == "__main__":
    asyncio.run(main())
