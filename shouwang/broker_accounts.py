"""Mosquitto accounts: the password file (PBKDF2, as `mosquitto_passwd` writes it) and the ACL.

What `shouwang edge provision` and `shouwang cloud provision` share. Passwords are drawn here,
hashed here and handed back once to the caller, which prints them or writes them to a 0600 file;
they never reach a log. Only hashes are kept in the password file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

# Mosquitto 2.0's own format and defaults (`mosquitto_passwd`: sha512-pbkdf2, 12-byte salt,
# 101 iterations). The passwords are 192 random bits, so the iteration count adds nothing an
# attacker would notice; the default keeps connect storms of many devices cheap for the broker.
HASH_PREFIX = "$7$"
ITERATIONS = 101
SALT_BYTES = 12
# An account name becomes a topic level through the ACL's %u: nothing that is MQTT syntax
# (`+ # /`), and no `:`, which separates name and hash in the password file.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class ProvisionError(Exception):
    """Provisioning cannot go on: a bad name, an unreadable file; the message says which."""


def new_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return (f"{HASH_PREFIX}{iterations}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a `$7$` line's hash (for tests and `--check`)."""
    try:
        _, _, iterations, salt, _ = hashed.split("$")
        expected = hash_password(password, salt=base64.b64decode(salt),
                                 iterations=int(iterations))
    except ValueError:
        return False
    return secrets.compare_digest(expected, hashed)


def check_name(name: str, what: str) -> str:
    if not _NAME_RE.match(name):
        raise ProvisionError(
            f"{what} {name!r} cannot be a broker account: use 1-64 of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return name


@dataclass
class PasswordFile:
    """A Mosquitto password file: account name → hash, read, changed and written whole."""

    path: Path
    hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> PasswordFile:
        found = cls(path)
        if not path.exists():
            return found
        try:
            text = path.read_text()
        except OSError as err:
            raise ProvisionError(f"{path}: cannot read: {err.strerror}") from err
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            name, sep, hashed = line.partition(":")
            if not sep or not hashed.startswith(HASH_PREFIX):
                raise ProvisionError(
                    f"{path}:{number}: not a `name:$7$...` line of a Mosquitto password file"
                )
            found.hashes[name] = hashed
        return found

    def issue(self, name: str) -> str:
        """A new password for `name` (replacing any other); returns it, once."""
        password = new_password()
        self.hashes[name] = hash_password(password)
        return password

    def save(self, owner: str | None = None) -> None:
        write_private(self.path, "".join(f"{n}:{h}\n" for n, h in sorted(self.hashes.items())),
                      owner)


def write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Write a file only its owner reads (0600), atomically: a broker that reloads (SIGHUP)
    mid-write never sees half a password file, and the secret is never world-readable.

    The file keeps the owner of the one it replaces (the broker's user, set once by
    `--broker-user`), or gets `owner`: Mosquitto reads these files after dropping to its
    own user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(temporary, 0o600)  # an older file of that name kept its mode through O_TRUNC
    uid, gid = _owner(owner) if owner else _current_owner(path)
    if (uid, gid) != (os.geteuid(), os.getegid()):
        try:
            os.chown(temporary, uid, gid)
        except PermissionError as err:
            os.unlink(temporary)
            raise ProvisionError(
                f"{path}: cannot give it to uid {uid}: run as root, or without --broker-user"
            ) from err
    os.replace(temporary, path)


def _owner(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError as err:
        raise ProvisionError(f"--broker-user {user}: no such user on this machine") from err
    return entry.pw_uid, entry.pw_gid


def _current_owner(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return os.geteuid(), os.getegid()
    return st.st_uid, st.st_gid


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
