"""requirements.lock: every Python package `make venv` installs, at the version tested.

    python scripts/lock.py update [--constraints FILE | --newest]
        Resolve `-e .[test]` with pip (nothing is installed) and write requirements.lock: the
        whole closure, one `name==version` a line. By default the versions are those installed
        in the interpreter running this script (the venv the suite passed in); with
        `--constraints`, those a file names; with `--newest`, the newest pyproject.toml allows.
    python scripts/lock.py check
        Exit 1, naming each difference, unless the running interpreter has exactly the locked
        versions installed and nothing else (besides this project and the installer's tools).
    python scripts/lock.py diff
        Print each installed package whose version differs from the lock (for `make
        test-latest`: which newer releases the unit tests ran against). Always exits 0.

The lock is resolved for the project's machine (CPython 3.11, Linux x86_64): packages with
markers for other interpreters are not in it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PROJECT = "shouwang"
# The installer's own tools: present in every venv, not the project's dependencies.
TOOLS = {"pip", "setuptools", "wheel"}
HEADER = """\
# Every Python package `make venv` installs (`pip install -r requirements.lock`, then this
# project with --no-deps), at the versions the test suite passed with. Written by
# `python scripts/lock.py update`; do not edit by hand. pyproject.toml keeps the ranges the
# code works with; `make test-latest` runs the unit tests with the newest releases they allow.
# Resolved for CPython {python} on {platform}.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise SystemExit(f"{path}:{number}: expected name==version, got {raw!r}")
        pins[canonical(name.strip())] = version.strip()
    return pins


def installed() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[canonical(name)] = dist.version
    return found


def resolve(extra_args: list[str]) -> dict[str, str]:
    """The closure of `-e .[test]` as pip resolves it, without installing anything."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
             "--ignore-installed", "--report", str(report), "-e", f"{ROOT}[test]",
             *extra_args],
            check=True,
        )
        items = json.loads(report.read_text())["install"]
    pins = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
    pins.pop(PROJECT, None)
    return pins


def update(args: argparse.Namespace) -> int:
    extra: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.constraints:
            extra = ["-c", str(args.constraints.resolve())]
        elif not args.newest:
            here = Path(tmp) / "installed.txt"
            here.write_text("".join(f"{n}=={v}\n" for n, v in sorted(installed().items())
                                    if n != PROJECT and n not in TOOLS))
            extra = ["-c", str(here)]
        pins = resolve(extra)
    import platform

    text = HEADER.format(python=platform.python_version(),
                         platform=f"{platform.system()} {platform.machine()}")
    text += "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    LOCK.write_text(text)
    print(f"{LOCK.name}: {len(pins)} packages")
    return 0


def check(_: argparse.Namespace) -> int:
    pins, have = read_lock(), installed()
    problems = [f"{n}: locked {v}, installed {have.get(n, 'nothing')}"
                for n, v in sorted(pins.items()) if have.get(n) != v]
    problems += [f"{n} {v}: installed, not in {LOCK.name}" for n, v in sorted(have.items())
                 if n not in pins and n != PROJECT and n not in TOOLS]
    for line in problems:
        print(f"lock: {line}", file=sys.stderr)
    if problems:
        print(f"lock: this venv differs from {LOCK.name} ({len(problems)}); rebuild it "
              "(rm -rf .venv && make venv) or, when the change is meant, "
              "`python scripts/lock.py update`", file=sys.stderr)
        return 1
    return 0


def diff(_: argparse.Namespace) -> int:
    pins, have = read_lock(), installed()
    newer = [(n, pins.get(n, "-"), v) for n, v in sorted(have.items())
             if pins.get(n) != v and n != PROJECT and n not in TOOLS]
    if not newer:
        print(f"every package at its {LOCK.name} version")
    for name, locked, version in newer:
        print(f"{name}: {locked} (lock) -> {version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("update", help="resolve and write requirements.lock")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--constraints", type=Path, help="versions from this file")
    how.add_argument("--newest", action="store_true", help="the newest pyproject.toml allows")
    p.set_defaults(fn=update)
    sub.add_parser("check", help="the running venv matches the lock").set_defaults(fn=check)
    sub.add_parser("diff", help="installed versions that differ from the lock").set_defaults(
        fn=diff)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
