"""Regenerate the device-kind tables in docs/devices.md from device_profiles/ (--check: stale?)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from shouwang.profiles import LIFE_SAFETY_TYPES, DeviceProfile, FieldSpec, load_profiles

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "devices.md"
BEGIN = (
    "<!-- BEGIN device tables: generated from device_profiles/ by scripts/gen_device_docs.py -->"
)
END = "<!-- END device tables -->"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def _range(spec: FieldSpec) -> str:
    if spec.choices is not None:
        return ", ".join(f"`{c}`" for c in spec.choices)
    if spec.min is not None and spec.max is not None:
        return f"{spec.min:g} – {spec.max:g}"
    if spec.min is not None:
        return f"≥ {spec.min:g}"
    if spec.max is not None:
        return f"≤ {spec.max:g}"
    return "—"


def _fields_table(fields: Mapping[str, FieldSpec]) -> list[str]:
    lines = ["| field | type | unit | valid | description |", "|---|---|---|---|---|"]
    for name, f in fields.items():
        lines.append(
            f"| `{name}` | {f.type} | {_cell(f.unit or '—')} | {_cell(_range(f))} "
            f"| {_cell(f.description)} |"
        )
    return lines


def _event_data(fields: Mapping[str, FieldSpec]) -> str:
    if not fields:
        return "—"
    return ", ".join(f"`{n}` ({_cell(f.unit or f.type)})" for n, f in fields.items())


def _kind_section(p: DeviceProfile) -> list[str]:
    stale = p.report_interval_s * p.liveness_tolerance
    lines = [
        f"### `{p.kind}`",
        "",
        f"{_cell(p.description)}. Reports every {_duration(p.report_interval_s)}; its data is "
        f"stale after {_duration(stale)} (tolerance {p.liveness_tolerance:g} intervals).",
        "",
        *_fields_table(p.fields),
        "",
    ]
    if p.events:
        lines += ["| event | data | alert | description |", "|---|---|---|---|"]
        for name, e in p.events.items():
            if e.alert is None:
                alert = "—"
            else:
                marker = " (life-safety)" if e.alert.type in LIFE_SAFETY_TYPES else ""
                alert = f"`{e.alert.type}` {e.alert.severity}{marker}"
            lines.append(
                f"| `{name}` | {_event_data(e.fields)} | {alert} | {_cell(e.description)} |"
            )
        lines.append("")
    return lines


def render(profiles: Mapping[str, DeviceProfile]) -> str:
    """The generated block, markers included."""
    lines = [
        BEGIN,
        "",
        "| kind | reports every | fields | events | alerts raised |",
        "|---|---|---|---|---|",
    ]
    for kind, p in profiles.items():
        alerts = sorted({f"`{a.type}`" for a in p.alerting_events.values()})
        lines.append(
            f"| [`{kind}`](#{kind}) | {_duration(p.report_interval_s)} | {len(p.fields)} "
            f"| {len(p.events)} | {', '.join(alerts) or '—'} |"
        )
    lines.append("")
    for p in profiles.values():
        lines += _kind_section(p)
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{DOC}: markers {BEGIN!r} … {END!r} not found")
    return text[:start] + block + text[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if docs/devices.md is stale")
    args = p.parse_args(argv)
    current = DOC.read_text(encoding="utf-8")
    updated = replace_block(current, render(load_profiles()))
    if args.check:
        if updated != current:
            print(f"{DOC} is stale: run scripts/gen_device_docs.py", file=sys.stderr)
            return 1
        return 0
    if updated != current:
        DOC.write_text(updated, encoding="utf-8")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
