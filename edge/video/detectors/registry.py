"""The detector plugin interface and its registry, Frigate-style (`detectors/detector_types.py`).

A detector is a class with a `type_key` and a strict pydantic config class whose `type` is that
key; it lives in a module of `edge.video.detectors` and registers itself with `@register`.
`discover()` imports every module of the package: one that fails to import (a missing runtime,
a syntax error) is logged and the others load. `create(config)` validates a config mapping
against the chosen plugin's own config class, so a wrong key fails at start-up with its name.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from edge.video.detections import Detections
from shouwang.config import ConfigError, Strict, validate

log = logging.getLogger(__name__)
PACKAGE = "edge.video.detectors"


class DetectorConfig(Strict):
    """Keys every detector has; a plugin's config narrows `type` to its `type_key`."""

    type: str = Field(description="Detector type: the plugin's type_key")


class Detector(ABC):
    """One model behind one interface: an image in, `Detections` in that image's pixels out."""

    type_key: ClassVar[str]
    config_class: ClassVar[type[DetectorConfig]]

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config

    @abstractmethod
    def detect(self, image: np.ndarray) -> Detections:
        """Detections in `image` (BGR or grey, uint8), in its pixel coordinates."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Run the model once or twice so the first real frame is not the slow one (a health
        check that times the first inference must not restart a worker for it)."""


_REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector known by its `type_key`."""
    if cls.type_key in _REGISTRY and _REGISTRY[cls.type_key] is not cls:
        raise ValueError(f"two detectors claim type {cls.type_key!r}")
    _REGISTRY[cls.type_key] = cls
    return cls


def discover(package: str = PACKAGE) -> dict[str, type[Detector]]:
    """Import every module of `package`; one that fails is logged and the rest load."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        name = f"{package}.{info.name}"
        try:
            importlib.import_module(name)
        except Exception as err:  # a broken plugin must not take the other detectors down
            log.error("detector plugin %s not loaded: %s: %s", name, type(err).__name__, err)
    prefix = f"{package}."
    return {k: v for k, v in _REGISTRY.items() if v.__module__.startswith(prefix)}


def create(config: Mapping[str, Any], *, source: str = "detector",
           package: str = PACKAGE) -> Detector:
    """The detector a config mapping asks for, its config checked by the plugin's own class."""
    types = discover(package)
    kind = config.get("type")
    if kind not in types:
        known = ", ".join(sorted(types)) or "none loaded"
        raise ConfigError(f"{source}: type: unknown detector {kind!r} (known: {known})")
    cls = types[str(kind)]
    return cls(validate(dict(config), cls.config_class, source=source))
