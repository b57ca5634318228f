"""The Notifier plugin interface and its registry: one module per channel in `plugins/`."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import aiohttp

from cloud.notify.config import NotifyConfig
from cloud.notify.message import Message, Outcome, Target
from cloud.store import Store
from shouwang.clock import Clock

log = logging.getLogger(__name__)
PLUGINS_PACKAGE = "cloud.notify.plugins"


@dataclass(frozen=True)
class Context:
    """What every notifier may use: one HTTP session per process, the store, the clock."""

    config: NotifyConfig
    store: Store
    clock: Clock
    http: aiohttp.ClientSession


class Notifier(ABC):
    """One delivery channel. Subclasses set `channel` and live in a module under `plugins/`."""

    channel: ClassVar[str]

    @classmethod
    @abstractmethod
    async def create(cls, ctx: Context) -> Notifier | None:
        """The notifier for this configuration, or None when the channel is not configured."""

    @abstractmethod
    async def targets(self, recipient: str) -> list[Target]:
        """Where this channel reaches `recipient` (`user:<id>` or `role:<name>`); may be []."""

    @abstractmethod
    async def send(self, target: Target, message: Message) -> Outcome:
        """One attempt. Never raises for a delivery problem: it is an Outcome."""

    async def forget(self, target: Target) -> None:  # noqa: B027 - optional hook
        """The target is gone for good (a push subscription answered 404/410)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `create` took."""


_REGISTRY: dict[str, type[Notifier]] = {}


def register(cls: type[Notifier]) -> type[Notifier]:
    """Class decorator: make a notifier known by its `channel` name."""
    if cls.channel in _REGISTRY and _REGISTRY[cls.channel] is not cls:
        raise ValueError(f"two notifiers claim channel {cls.channel!r}")
    _REGISTRY[cls.channel] = cls
    return cls


def discover(package: str = PLUGINS_PACKAGE) -> dict[str, type[Notifier]]:
    """Import every plugin module; one that fails to import is logged and the rest load."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        name = f"{package}.{info.name}"
        try:
            importlib.import_module(name)
        except Exception as err:  # a broken plugin must not take the other channels down
            log.error("notifier plugin %s not loaded: %s: %s", name, type(err).__name__, err)
    prefix = f"{package}."
    return {k: v for k, v in _REGISTRY.items() if v.__module__.startswith(prefix)}
