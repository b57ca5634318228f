"""The one vocabulary of alert types: names in 中文 and English (shouwang/alert_types.yaml)."""

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
    """What the dashboards fetch: every type's names, in order."""
    return {"types": [{"type": t, **n.model_dump()} for t, n in alert_types().items()]}
