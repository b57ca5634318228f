"""Notifications: Web Push and Apprise channels behind one Dispatcher (issue #7).

The lead wires it up with::

    dispatcher = build_notify(config.notify, store, SystemClock())
    await dispatcher.start()
    push_routes(app, current_user, dispatcher); family_routes(app)
    ...
    await dispatcher.notify("user:u-17", alert_row, stage="family")
"""

from __future__ import annotations

from cloud.notify.config import NotifyConfig
from cloud.notify.dispatcher import Dispatcher
from cloud.notify.message import AlertSummary
from cloud.notify.tables import alert_attempts
from cloud.store import Store
from shouwang.clock import Clock

__all__ = ["AlertSummary", "Dispatcher", "NotifyConfig", "alert_attempts", "build_notify"]


def build_notify(config: NotifyConfig, store: Store, clock: Clock) -> Dispatcher:
    """A Dispatcher over every channel `config` enables; call `await start()` before use."""
    return Dispatcher(config, store, clock)
