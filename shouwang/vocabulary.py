"""The one vocabulary of alert types: names in 中文 and English (shouwang/alert_types.yaml),
and of the watchlists a face match names (shouwang/explanations.yaml `watchlists`)."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, RootModel

from shouwang.config import Strict, load_yaml

TYPES_FILE = Path(__file__).with_name("alert_types.yaml")
LANGUAGES = ("zh", "en")


class TypeNames(Strict):
    zh: str = Field(min_length=1, description="Name in Chinese")
    en: str = Field(min_length=1, description="Name in English")


class AlertTypes(RootModel[dict[str, TypeNames]]):
    """Alert type → its names, in the order filters list them."""


@functools.cache
def alert_types() -> dict[str, TypeNames]:
    """The registry (read once; a bad file stops start-up with the file and key)."""
    return load_yaml(TYPES_FILE, AlertTypes).root


def vocabulary() -> dict[str, object]:
    """What the dashboards fetch: every type's names, in order; every watchlist's."""
    from shouwang.explain import sentences  # it builds on this module

    return {
        "types": [{"type": t, **n.model_dump()} for t, n in alert_types().items()],
        "watchlists": [{"list": k, **n.model_dump()} for k, n in sentences().watchlists.items()],
    }


SEVERITY_NAMES = {
    "critical": TypeNames(zh="紧急", en="critical"),
    "high": TypeNames(zh="高", en="high"),
    "medium": TypeNames(zh="中", en="medium"),
    "low": TypeNames(zh="低", en="low"),
    "info": TypeNames(zh="提示", en="info"),
}


def headline(alert_type: str, severity: str) -> str:
    """A notification's title, for a reader in either language: "[紧急] 一键求助 · SOS"."""
    names = alert_types().get(alert_type)
    sev = SEVERITY_NAMES.get(severity)
    what = f"{names.zh} · {names.en}" if names else alert_type
    return f"[{sev.zh if sev else severity}] {what}"
