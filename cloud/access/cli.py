"""`shouwang cloud user add|list|disable|enable|passwd`: accounts from the command line.

Passwords come from a file (or `-` for standard input), never from the command line, where
`ps` and shell history would show them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

from cloud.access.scope import ROLES
from cloud.access.users import Access, UserError
from cloud.config import CloudConfig
from cloud.store import Store
from shouwang.clock import SystemClock
from shouwang.config import ConfigError, load_yaml


def add_parsers(cloud: argparse._SubParsersAction) -> None:
    user = cloud.add_parser("user", help="manage cloud users").add_subparsers(
        dest="user_command", required=True
    )
    add = user.add_parser("add", help="create a user with a role and a scope")
    add.add_argument("--config", type=Path, required=True, help="cloud YAML file")
    add.add_argument("--username", required=True)
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--scope", action="append", default=[],
                     help="police/worker: a location prefix; family: a resident id (repeatable)")
    add.add_argument("--display-name", default=None)
    add.add_argument("--password-file", type=Path, required=True,
                     help="file holding the password (first line), or - for standard input")
    add.set_defaults(fn=cmd_user)
    for name, text in (("disable", "disable a user (ends their sessions)"),
                       ("enable", "enable a disabled user"),
                       ("passwd", "set a new password (ends their sessions)")):
        p = user.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True)
        p.add_argument("--username", required=True)
        if name == "passwd":
            p.add_argument("--password-file", type=Path, required=True)
        p.set_defaults(fn=cmd_user)
    name = user.add_parser("name", help="set the name the screens show for a user")
    name.add_argument("--config", type=Path, required=True)
    name.add_argument("--username", required=True)
    name.add_argument("--display-name", required=True)
    name.set_defaults(fn=cmd_user)
    ls = user.add_parser("list", help="list users with role and scope")
    ls.add_argument("--config", type=Path, required=True)
    ls.set_defaults(fn=cmd_user)


def _password(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.readline().rstrip("\r\n")
    try:
        return path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    except OSError as err:
        raise ConfigError(f"--password-file {path}: cannot read: {err.strerror}") from err


def cmd_user(args: argparse.Namespace) -> int:
    config = load_yaml(args.config, CloudConfig)
    try:
        return asyncio.run(_run(args, config))
    except UserError as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, config: CloudConfig) -> int:
    store = await Store.connect(config.database_url)
    access = Access(store.engine, SystemClock(), config.access)
    actor = f"cli:{getpass.getuser()}"
    try:
        command = args.user_command
        if command == "add":
            scopes = list(args.scope)
            await access.add_user(
                args.username, _password(args.password_file), args.role,
                display_name=args.display_name, actor=actor,
                locations=scopes if args.role in ("police", "worker") else (),
                residents=scopes if args.role == "family" else (),
            )
            print(f"added {args.username} ({args.role})")
        elif command == "list":
            for u in await access.list_users():
                scope = ",".join(u["locations"] + u["residents"]) or "*"
                state = "disabled" if u["disabled"] else "enabled"
                print(f"{u['username']}\t{u['role']}\t{state}\t{scope}")
        elif command in ("disable", "enable"):
            await access.set_disabled(args.username, command == "disable", actor=actor)
            print(f"{args.username} {command}d")
        elif command == "name":
            await access.set_display_name(args.username, args.display_name, actor=actor)
            print(f"{args.username}: display name set")
        elif command == "passwd":
            await access.set_password(args.username, _password(args.password_file), actor=actor)
            print(f"{args.username}: password changed")
    finally:
        await store.close()
    return 0
