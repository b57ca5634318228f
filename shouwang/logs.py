"""Structured logs: one JSON object per line on stderr, fields passed with `extra=`."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILES_KEPT = 5


def setup(component: str, level: str = "INFO", file: Path | None = None) -> None:
    """JSON lines on stderr, or into `file`, rotated at LOG_FILE_BYTES with LOG_FILES_KEPT
    old files kept, so a gateway's disk is never filled by its own log."""
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILES_KEPT, encoding="utf-8"
        )
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger(component).debug("logging ready")


class Throttled:
    """Log a recurring complaint once per key (a device and a reason) and interval.

    Hostile or broken traffic must not fill the disk through the log: 100,000 malformed
    messages once wrote 23 MB of warnings. The first of a kind is logged at once; repeats
    within `interval_s` are counted and told with the next line of that kind ("and 99 more
    like it"). At most `max_keys` keys are logged per interval: past that, one line says how
    many were held back. The counts per reason are in the metrics either way.
    """

    def __init__(
        self, logger: logging.Logger, interval_s: float = 60.0, max_keys: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[tuple[str, str], list[float | int]] = OrderedDict()
        self._window = clock()
        self._logged = 0  # keys logged in this window
        self._held = 0  # lines held back by the per-window cap

    def warning(self, key: tuple[str, str], msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log unless a line of this key was logged within the interval; True if logged."""
        now = self.clock()
        if now - self._window >= self.interval_s:
            if self._held:
                self.logger.warning("%d more complaints held back in the last %.0f s",
                                    self._held, self.interval_s)
            self._window, self._logged, self._held = now, 0, 0
        seen = self._keys.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            seen[1] = int(seen[1]) + 1
            return False
        if self._logged >= self.max_keys:
            self._held += 1
            return False
        more = int(seen[1]) if seen is not None else 0
        self._keys[key] = [now, 0]
        self._keys.move_to_end(key)
        while len(self._keys) > 10 * self.max_keys:
            self._keys.popitem(last=False)
        self._logged += 1
        if more:
            msg += " (and %d more like it since the last such line)"
            args = (*args, more)
        self.logger.warning(msg, *args, **kwargs)
        return True
