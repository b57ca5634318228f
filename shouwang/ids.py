"""Time-sortable unique ids (ULID layout): the idempotency key at every hop."""

from __future__ import annotations

import hashlib
import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(now_ms: int | None = None) -> str:
    """A 26-character id whose lexical order is its creation order, even within a millisecond."""
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            # Same (or earlier: clock stepped back) millisecond: keep order by counting up.
            ms = _last_ms
            rand = _last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = ms, rand & ((1 << 80) - 1)
    return _encode((ms << 80) | _last_rand)


def derived_id(ts_ms: int, *parts: str) -> str:
    """A deterministic id: the same inputs give the same id, so re-processing is idempotent."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).digest()
    return _encode((ts_ms << 80) | int.from_bytes(digest, "big"))


def id_time_ms(value: str) -> int:
    """The millisecond timestamp inside an id made by `new_id` or `derived_id`."""
    number = 0
    for ch in value:
        number = (number << 5) | _DECODE[ch]
    return number >> 80
