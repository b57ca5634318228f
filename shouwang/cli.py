"""The one command line: `shouwang edge|cloud|sim|video|face|evidence|demo ...`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from shouwang import logs
from shouwang.config import BrokerConfig, ConfigError, TlsConfig, load_yaml


def _run(component: str, coro: Coroutine[Any, Any, None], log_file: Path | None = None) -> int:
    """Run a daemon until SIGINT/SIGTERM, then shut it down cleanly."""
    logs.setup(component, os.environ.get("SHOUWANG_LOG_LEVEL", "INFO"), log_file)

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return 0


def cmd_edge_run(args: argparse.Namespace) -> int:
    from edge.config import EdgeConfig
    from edge.daemon import run

    return _run("edge", run(load_yaml(args.config, EdgeConfig)), args.log_file)


def cmd_cloud_run(args: argparse.Namespace) -> int:
    from cloud.config import CloudConfig
    from cloud.server import run

    return _run("cloud", run(load_yaml(args.config, CloudConfig)), args.log_file)


def cmd_cloud_import(args: argparse.Namespace) -> int:
    from cloud.admin import import_cli

    return import_cli(args.config, args.kind, args.file)


def cmd_check(args: argparse.Namespace) -> int:
    from cloud.config import CloudConfig
    from edge.config import EdgeConfig
    from edge.daemon import check_bindings
    from shouwang.profiles import load_profiles

    if args.kind == "edge":
        check_bindings(load_yaml(args.config, EdgeConfig), load_profiles())
    else:
        load_yaml(args.config, CloudConfig).escalation.load()
    print(f"{args.config}: ok")
    return 0


def cmd_sim_button(args: argparse.Namespace) -> int:
    from simulators.button import run

    # A device's account is named by its id (`shouwang edge provision`).
    if args.ca_file is not None and not args.ca_file.is_file():
        print(f"shouwang: --ca-file {args.ca_file}: no such file", file=sys.stderr)
        return 2
    broker = BrokerConfig(
        host=args.host, port=args.port, password_file=args.password_file,
        username=args.device if args.password_file else None,
        tls=TlsConfig(ca_file=args.ca_file) if args.ca_file else None,
    )
    return _run("sim", run(broker, args.device, args.every, args.count))


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    from shouwang.evidence_package import KeyFileError, load_public_key, verify

    try:
        key = None if args.public_key is None else load_public_key(args.public_key)
    except KeyFileError as err:
        print(f"shouwang: --public-key {err}", file=sys.stderr)
        return 2
    report = verify(args.package, key)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from shouwang.demo import Demo

    logs.setup("demo")
    return Demo(args.dir, args.http_port).run()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shouwang", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    edge = sub.add_parser("edge", help="the gateway daemon").add_subparsers(
        dest="sub", required=True
    )
    er = edge.add_parser("run", help="run the edge daemon")
    er.add_argument("--config", type=Path, required=True, help="site YAML file")
    er.add_argument("--log-file", type=Path, default=None,
                    help="write JSON log lines here, rotated at 10 MiB, 5 kept (default: stderr)")
    er.set_defaults(fn=cmd_edge_run)
    ec = edge.add_parser("check", help="validate a site YAML file and exit")
    ec.add_argument("--config", type=Path, required=True)
    ec.set_defaults(fn=cmd_check, kind="edge")
    from edge.provision import add_parser as add_edge_provision

    add_edge_provision(edge)

    cloud = sub.add_parser("cloud", help="the cloud aggregator").add_subparsers(
        dest="sub", required=True
    )
    cr = cloud.add_parser("run", help="run the cloud aggregator")
    cr.add_argument("--config", type=Path, required=True, help="cloud YAML file")
    cr.add_argument("--log-file", type=Path, default=None,
                    help="write JSON log lines here, rotated at 10 MiB, 5 kept (default: stderr)")
    cr.set_defaults(fn=cmd_cloud_run)
    cc = cloud.add_parser("check", help="validate a cloud YAML file and exit")
    cc.add_argument("--config", type=Path, required=True)
    cc.set_defaults(fn=cmd_check, kind="cloud")
    # --- cloud subcommands from their own packages (one line each) ---
    from cloud.access.cli import add_parsers as add_user_parsers

    add_user_parsers(cloud)
    from cloud.provision import add_parser as add_cloud_provision

    add_cloud_provision(cloud)
    from cloud.watchlist_keys import add_parser as add_watchlist_keys

    add_watchlist_keys(cloud)
    # Admin commands of the cloud (imports here; user commands beside them).
    ci = cloud.add_parser("import", help="import rows from CSV or YAML: all or nothing")
    ci.add_argument("kind", choices=["sites", "locations", "residents", "devices"])
    ci.add_argument("file", type=Path, help="FILE.csv or FILE.yaml")
    ci.add_argument("--config", type=Path, required=True, help="cloud YAML file")
    ci.set_defaults(fn=cmd_cloud_import)

    sim = sub.add_parser("sim", help="device simulators").add_subparsers(dest="sub", required=True)
    sb = sim.add_parser("button", help="press a simulated emergency button")
    sb.add_argument("--host", default="127.0.0.1", help="edge broker host")
    sb.add_argument("--port", type=int, default=1883, help="edge broker port")
    sb.add_argument("--device", default="btn-0001", help="device id")
    sb.add_argument("--every", type=float, default=None, help="press every N seconds")
    sb.add_argument("--count", type=int, default=None, help="stop after N presses")
    sb.add_argument("--password-file", type=Path, default=None,
                    help="the device's broker password (its account is its id); none: anonymous")
    sb.add_argument("--ca-file", type=Path, default=None,
                    help="the broker's CA certificate: TLS, verified (default: plain TCP)")
    sb.set_defaults(fn=cmd_sim_button)
    from simulators.camera import add_parser as add_camera_parser

    add_camera_parser(sim)
    from edge.video.offline import add_parser as add_video_parser

    add_video_parser(sub)
    from edge.video.face.enrol import add_parser as add_face_parser

    add_face_parser(sub)

    evidence = sub.add_parser("evidence", help="evidence packages").add_subparsers(
        dest="sub", required=True
    )
    ev = evidence.add_parser(
        "verify", help="check an evidence package offline: signature, hashes, nothing added; "
        "exit 0 only when everything verifies (docs/evidence.md)")
    ev.add_argument("package", type=Path, help="PACKAGE.zip from GET /api/alerts/{id}/package")
    ev.add_argument("--public-key", type=Path, default=None,
                    help="the deployment's public key you trust: PEM, the JSON of "
                    "GET /api/evidence/public-key, or the raw key in base64 (default: the key "
                    "the manifest names, which proves integrity, not origin)")
    ev.set_defaults(fn=cmd_evidence_verify)

    from shouwang.certs import add_parser as add_certs_parser

    add_certs_parser(sub)

    demo = sub.add_parser("demo", help="broker, cloud, edge and simulators on this machine")
    demo.add_argument("--dir", type=Path, default=Path("var/demo"), help="working directory")
    demo.add_argument("--http-port", type=int, default=8080, help="dashboard port")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as err:
        message = str(err)
        source = getattr(args, "config", None)
        if source is not None and not message.startswith(str(source)):
            message = f"{source}: {message}"
        print(f"shouwang: configuration error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
