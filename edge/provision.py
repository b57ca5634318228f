"""`shouwang edge provision`: the gateway broker's accounts and roles, one account per device.

Each MQTT device gets an account named by its id and may publish only on its own
`dev/{id}/telemetry|event|status` and read only its own `dev/{id}/config|cmd`; the edge daemon
(and the camera workers it starts, which publish as their cameras) has an account of its own.
A device's password is printed once, when it is made; the gateway keeps only its hash. Devices
that left the site file lose their account. Everything goes into one file of Mosquitto's
dynamic-security plugin, read when the broker starts. docs/provisioning.md says how to install it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edge.config import EdgeConfig
from shouwang.broker_accounts import (
    ADMIN_ACCOUNT,
    DYNSEC_FILE,
    AccountRole,
    Accounts,
    ProvisionError,
    check_name,
    may_read,
    may_write,
    old_files_replaced,
    read_secret,
    verify_password,
    write_private,
)
from shouwang.broker_control import add_apply_arguments, apply_or_restart
from shouwang.config import load_yaml
from shouwang.protocol import device_topic

EDGE_ACCOUNT = "shouwang-edge"
EDGE_PASSWORD_FILE = "edge.password"


def role_of(account: str) -> AccountRole:
    """What each account of the gateway broker may do; the rest is refused (a subscription at
    the SUBACK, a publish with "not authorized")."""
    if account == EDGE_ACCOUNT:
        # It reads every device and writes each device's retained config and commands; its
        # camera workers publish as their cameras (dev/{camera}/...) under this account.
        # `local/alarm` is its on-site announcement when the cloud cannot be reached.
        return AccountRole("the edge daemon and its camera workers",
                           [*may_write("dev/#"), *may_read("dev/#"),
                            *may_write("local/#"), *may_read("local/#")])
    # A device publishes only its own readings, events and status (its last will too), and
    # reads only its own config and commands.
    return AccountRole(f"device {account}", [
        *(acl for kind in ("telemetry", "event", "status")
          for acl in may_write(device_topic(account, kind))),
        *(acl for kind in ("config", "cmd") for acl in may_read(device_topic(account, kind))),
    ])


@dataclass
class EdgeAccounts:
    """What one run did: new passwords (to be shown once), kept and removed accounts."""

    issued: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # An older release's password file and ACL, carried into the plugin's file and removed.
    old_files: list[Path] = field(default_factory=list)
    # For `--apply`: whether the admin account is new (the broker cannot know it yet) and the
    # running broker's commands.
    admin_issued: bool = False
    changes: list[dict[str, object]] = field(default_factory=list)


def mqtt_devices(config: EdgeConfig) -> list[str]:
    """Devices that talk to the broker themselves: not polled meters, not cameras (their
    workers publish under the daemon's account)."""
    cameras = {c.id for c in config.cameras}
    return [
        d.id for d in config.devices
        if d.modbus is None and d.cjt188 is None and d.id not in cameras
    ]


def provision(config: EdgeConfig, directory: Path, rotate: list[str] | None = None,
              broker_user: str | None = None, admin: bool = False) -> EdgeAccounts:
    """Write the accounts; with `admin`, also the account `--apply` uses, and the commands
    that bring a running broker up to date (`done.changes`)."""
    devices = [check_name(d, "device id") for d in mqtt_devices(config)]
    if EDGE_ACCOUNT in devices:
        raise ProvisionError(f"device id {EDGE_ACCOUNT!r} is the edge daemon's account name")
    if ADMIN_ACCOUNT in devices:
        raise ProvisionError(f"device id {ADMIN_ACCOUNT!r} is the broker's admin account name")
    rotate = list(rotate or [])
    unknown = sorted(set(rotate) - {*devices, EDGE_ACCOUNT})
    if unknown:
        raise ProvisionError(f"--rotate {', '.join(unknown)}: not a device of this site")
    passwords = Accounts.load(directory)
    done = EdgeAccounts()
    for name in sorted(set(passwords.hashes) - {*devices, EDGE_ACCOUNT, ADMIN_ACCOUNT}):
        del passwords.hashes[name]
        done.removed.append(name)
    # The daemon's own password lives in a file its site config names; one that no longer
    # matches the broker's hash (lost, edited) is replaced rather than trusted.
    edge_file = directory / EDGE_PASSWORD_FILE
    current = read_secret(edge_file)
    known = passwords.hashes.get(EDGE_ACCOUNT)
    if (EDGE_ACCOUNT in rotate or current is None or known is None
            or not verify_password(current, known)):
        write_private(edge_file, passwords.issue(EDGE_ACCOUNT) + "\n")
    for device in devices:
        if device in passwords.hashes and device not in rotate:
            done.kept.append(device)
        else:
            done.issued[device] = passwords.issue(device)
    done.admin_issued = admin and passwords.keep_admin()
    done.changes = passwords.changes(role_of)
    done.old_files = passwords.save(role_of, broker_user)
    return done


def add_parser(edge: argparse._SubParsersAction) -> None:
    p = edge.add_parser(
        "provision",
        help="write the gateway broker's accounts (its dynamic-security file): an account per "
        "device, printed once (docs/provisioning.md)",
    )
    p.add_argument("--config", type=Path, required=True, help="site YAML file")
    p.add_argument("--dir", type=Path, required=True,
                   help=f"where the broker's `{DYNSEC_FILE}` and the daemon's "
                   "`edge.password` go (e.g. /etc/shouwang/edge-broker)")
    p.add_argument("--rotate", action="append", default=[], metavar="DEVICE",
                   help=f"issue a new password for this device (or {EDGE_ACCOUNT}); repeatable")
    p.add_argument("--broker-user", default=None, metavar="USER",
                   help=f"give `{DYNSEC_FILE}` to the user Mosquitto runs as (Debian: "
                   "mosquitto); later runs keep the owner")
    add_apply_arguments(p)
    p.set_defaults(fn=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:
    config = load_yaml(args.config, EdgeConfig)
    directory = args.dir.resolve()
    try:
        done = provision(config, directory, args.rotate, args.broker_user, admin=args.apply)
        applied = apply_or_restart(args, directory, done.admin_issued, done.changes)
    except ProvisionError as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 2
    if done.issued:
        print("New device credentials (shown only now; the gateway keeps only their hashes):")
        for device, password in done.issued.items():
            print(f"  {device}  username={device}  password={password}")
    print(
        f"{len(done.issued)} device account(s) issued, {len(done.kept)} kept, "
        f"{len(done.removed)} removed{': ' + ', '.join(done.removed) if done.removed else ''}.\n"
        f"{old_files_replaced(done.old_files)}"
        f"Broker accounts: {directory / DYNSEC_FILE} ({applied}).\n"
        f"In {args.config}, edge_broker: username: {EDGE_ACCOUNT}, "
        f"password_file: {directory / EDGE_PASSWORD_FILE}"
    )
    return 0

