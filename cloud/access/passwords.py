"""Password hashing with scrypt from the standard library (no native dependency to build).

Hashes are self-describing (`scrypt$n$r$p$salt$hash`), so the cost can rise later and old
hashes still verify. Hashing takes tens of milliseconds of CPU: callers run it off the loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P = 2**14, 8, 1  # about 16 MiB and 30-60 ms per hash on a small server
_DUMMY = None  # a real hash to compare against for unknown users (same time either way)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return "$".join(["scrypt", str(N), str(R), str(P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, _unb64(digest))


def dummy_verify(password: str) -> None:
    """Spend the time of one verification, so an unknown user name answers no faster."""
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password("not a real password")
    verify_password(password, _DUMMY)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
