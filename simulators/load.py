"""Load generator: wearable telemetry at a steady rate from many simulated devices."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path

from shouwang.config import BrokerConfig, TlsConfig
from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope

TICK_S = 0.01  # publish in small bursts 100 times a second rather than one sleep per message


async def run(broker: BrokerConfig, devices: list[str], rate: float, seconds: float) -> int:
    """Publish `rate` telemetry messages a second (QoS 0) for `seconds`; returns the count."""
    client = MqttClient(broker, client_id=f"load-{random.randrange(1 << 30)}", max_inflight=100)
    await client.start()
    await client.wait_connected(10)
    sent = 0
    start = time.monotonic()
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) - sent
            for _ in range(due):
                device = devices[sent % len(devices)]
                body = {
                    "heart_rate": random.randint(55, 95),
                    "spo2": random.randint(94, 99),
                    "worn": True,
                    "battery": 80,
                }
                env = make_envelope(site=None, device=device, kind="telemetry", body=body)
                client.publish_nowait(device_topic(device, "telemetry"), env.to_bytes(), qos=0)
                sent += 1
            await asyncio.sleep(TICK_S)
    finally:
        await client.close()
    return sent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca-file", type=Path, default=None,
                   help="the broker's CA certificate: TLS, verified (default: plain TCP)")
    p.add_argument("--devices", type=int, default=100, help="wear-load-0000 ... ids")
    p.add_argument("--rate", type=float, default=1000, help="messages per second")
    p.add_argument("--seconds", type=float, default=60)
    args = p.parse_args()
    if args.ca_file is not None and not args.ca_file.is_file():
        p.error(f"--ca-file {args.ca_file}: no such file")
    devices = [f"wear-load-{i:04d}" for i in range(args.devices)]
    tls = TlsConfig(ca_file=args.ca_file) if args.ca_file else None
    sent = asyncio.run(
        run(BrokerConfig(host=args.host, port=args.port, tls=tls), devices, args.rate,
            args.seconds)
    )
    print(f"sent {sent} telemetry messages", flush=True)


if __name__ == "__main__":
    main()
