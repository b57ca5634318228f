"""Why an alert was raised, as a sentence in the reader's language (shouwang/explanations.yaml).

The board's detail, the family page and notifications show this, not rule identifiers:
"一键通按钮被按下 3 次", "佩戴者跌倒，30 秒内未取消". An alert the sentences do not know yet
(a new rule type) falls back to the rule's own English summary, never to nothing; a reader
who may not see the numbers a sentence needs (police do not see readings) gets the type's
name.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import RootModel

from shouwang.config import Strict, load_yaml
from shouwang.vocabulary import LANGUAGES, TypeNames, alert_types

FILE = Path(__file__).with_name("explanations.yaml")


class Sentences(Strict):
    events: dict[str, TypeNames]
    cancel_window: TypeNames
    times: TypeNames
    rules: dict[str, TypeNames]
    fields: dict[str, TypeNames]
    watchlists: dict[str, TypeNames]


class _File(RootModel[Sentences]):
    pass


@functools.cache
def sentences() -> Sentences:
    return load_yaml(FILE, _File).root


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _minutes(since: Any, until: int) -> int | None:
    if not isinstance(since, int | float) or until < since:
        return None
    return max(1, round((until - since) / 60_000))


def _number(value: Any) -> Any:
    return f"{value:g}" if isinstance(value, float) else value


def explain(alert: Mapping[str, Any], lang: str = "zh") -> str:
    """The sentence for `alert` (a stored or edge alert dict) in `lang` ("zh" or "en")."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: one of {', '.join(LANGUAGES)}")
    s = sentences()
    detail = alert.get("detail") or {}
    why = _mapping(detail.get("why"))
    who = _mapping(detail.get("who"))
    key, values = _choose(why, who, detail, int(alert.get("ts") or 0))
    values = {k: v for k, v in values.items() if v is not None}
    text: str | None = None
    if key is not None:
        table = s.events if key.startswith("event:") else s.rules
        names = table.get(key.removeprefix("event:"))
        if names is not None:
            if "field" in values:
                field = s.fields.get(str(values["field"]))
                values["field"] = getattr(field, lang) if field else values["field"]
            try:
                text = getattr(names, lang).format(**values)
            except (KeyError, IndexError):
                # A reader who may not see the readings (docs/access.md) gets the case's name.
                known = alert_types().get(str(alert.get("type")))
                text = getattr(known, lang) if known else None
            if key.startswith("event:") and why.get("cancel_window_s"):
                window = _number(why["cancel_window_s"])
                text += getattr(s.cancel_window, lang).format(cancel_window_s=window)
    if text is None:
        text = str(detail.get("what") or alert.get("type") or "")
    repeats = int(alert.get("repeats") or 0)
    if repeats:
        text += getattr(s.times, lang).format(n=repeats + 1)
    return text


def _choose(
    why: Mapping[str, Any], who: Mapping[str, Any], detail: Mapping[str, Any], ts: int
) -> tuple[str | None, dict[str, Any]]:
    """The sentence's key and the values it is filled with."""
    rule_type = why.get("type")
    values: dict[str, Any] = {
        k: _number(v) for k, v in why.items() if not isinstance(v, dict | list)
    }
    if rule_type == "event_alert" or (rule_type is None and "event" in detail):
        event = why.get("event") or detail.get("event")
        kind = who.get("kind") or detail.get("profile")
        return f"event:{kind}.{event}", values
    if rule_type == "threshold":
        return f"threshold.{why.get('side', 'high')}", values
    if rule_type in ("missing_data",):
        values["minutes"] = _minutes(why.get("last_ms"), ts)
        return "missing_data", values
    if rule_type == "device_offline":
        if "parent" in why:
            values["count"] = len(why.get("devices_offline") or [])
            return "device_offline.parent", values
        values["minutes"] = _minutes(why.get("offline_since_ms"), ts)
        return "device_offline", values
    if rule_type == "continuous_flow":
        values["minutes"] = _minutes(why.get("since_ms"), ts)
        return "continuous_flow", values
    if rule_type == "not_worn":
        values["minutes"] = _minutes(why.get("off_since_ms"), ts)
        return "not_worn", values
    if rule_type == "welfare":
        routine = _mapping(why.get("routine"))
        values["minutes"] = routine.get("max_gap_min")
        return f"welfare.{why.get('reason')}", values
    if isinstance(rule_type, str):
        return rule_type, values
    return None, values
