"""Mosquitto accounts: the dynamic-security plugin's file, each account's hash and role.

What `shouwang edge provision` and `shouwang cloud provision` share. Passwords are drawn here,
hashed here (PBKDF2, as `mosquitto_passwd` writes it) and handed back once to the caller, which
prints them or writes them to a 0600 file; they never reach a log. Only hashes are kept in the
broker's file. The plugin, unlike an `acl_file`, refuses a subscription beyond an account's
roles at the SUBACK (docs/decisions.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Mosquitto 2.0's own format and defaults (`mosquitto_passwd`: sha512-pbkdf2, 12-byte salt,
# 101 iterations). The passwords are 192 random bits, so the iteration count adds nothing an
# attacker would notice; the default keeps connect storms of many devices cheap for the broker.
HASH_PREFIX = "$7$"
ITERATIONS = 101
SALT_BYTES = 12
# An account name becomes a topic level in its role's ACLs: nothing that is MQTT syntax
# (`+ # /`), and no `:`, which separated name and hash in the old password file.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
# What the broker reads (`plugin_opt_config_file`), and what an older release wrote instead.
DYNSEC_FILE = "dynamic-security.json"
OLD_PASSWORD_FILE = "passwd"
OLD_ACL_FILE = "acl"
# The account `--apply` uses to change a running broker's accounts (shouwang/broker_control.py)
# over the plugin's topic; its password is in ADMIN_PASSWORD_FILE beside the broker's file.
ADMIN_ACCOUNT = "shouwang-admin"
ADMIN_PASSWORD_FILE = "admin.password"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"


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


@dataclass(frozen=True)
class Acl:
    """One allowed thing in a role: `publishClientSend` (publish), `publishClientReceive`
    (be delivered a message) or `subscribePattern` (subscribe with a filter the pattern
    covers, `+` and `#` included)."""

    kind: Literal["publishClientSend", "publishClientReceive", "subscribePattern"]
    topic: str

    def entry(self) -> dict[str, object]:
        return {"acltype": self.kind, "topic": self.topic, "allow": True}


def may_write(topic: str) -> list[Acl]:
    return [Acl("publishClientSend", topic)]


def may_read(topic: str) -> list[Acl]:
    # Both are checked: the subscription at the SUBACK, each message (retained too) on delivery.
    return [Acl("subscribePattern", topic), Acl("publishClientReceive", topic)]


@dataclass
class AccountRole:
    description: str
    acls: list[Acl]


@dataclass
class Accounts:
    """The dynamic-security plugin's file: each account with its hash and one role of its own,
    read, changed and written whole.

    Roles are not kept from the file but made again from each account's name on every save
    (`role_of`): the file is Shouwang's output, and provisioning again repairs an edited one."""

    directory: Path
    hashes: dict[str, str] = field(default_factory=dict)
    # As read, to tell the running broker what changed (`changes`).
    loaded: dict[str, str] = field(default_factory=dict)
    # The passwords drawn in this run, in memory only: the plugin takes new passwords over
    # `$CONTROL` in clear (it hashes them itself).
    issued: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / DYNSEC_FILE

    @classmethod
    def load(cls, directory: Path) -> Accounts:
        """The accounts of `directory`'s file; where there is none yet, those of an older
        release's password file, so devices and gateways keep their passwords."""
        found = cls(directory)
        if found.path.exists():
            found.hashes = _read_dynsec(found.path)
        elif (directory / OLD_PASSWORD_FILE).exists():
            found.hashes = _read_password_file(directory / OLD_PASSWORD_FILE)
        found.loaded = dict(found.hashes)
        return found

    def issue(self, name: str) -> str:
        """A new password for `name` (replacing any other); returns it, once."""
        password = new_password()
        self.hashes[name] = hash_password(password)
        self.issued[name] = password
        return password

    def keep_admin(self) -> bool:
        """Give `--apply` its account, or a new password where its file does not hold the
        current one (lost, edited); whether it was (re)issued, which the running broker
        cannot learn over an account it does not know yet."""
        path = self.directory / ADMIN_PASSWORD_FILE
        current, known = read_secret(path), self.hashes.get(ADMIN_ACCOUNT)
        if current is not None and known is not None and verify_password(current, known):
            return False
        write_private(path, self.issue(ADMIN_ACCOUNT) + "\n")
        return True

    def changes(self, role_of: Callable[[str], AccountRole]) -> list[dict[str, object]]:
        """The plugin's commands that make a running broker hold what `save` writes: removed
        accounts deleted (which drops their connections), new ones created with their role,
        renewed passwords set."""
        commands: list[dict[str, object]] = []
        for name in sorted(set(self.loaded) - set(self.hashes)):
            commands += [{"command": "deleteClient", "username": name},
                         {"command": "deleteRole", "rolename": name}]
        for name in sorted(set(self.hashes) - set(self.loaded)):
            role = self._role(name, role_of)
            commands += [
                {"command": "createRole", "rolename": name, "textdescription": role.description,
                 "acls": [acl.entry() for acl in role.acls]},
                {"command": "createClient", "username": name, "password": self.issued[name],
                 "roles": [{"rolename": name}]},
            ]
        for name in sorted(set(self.hashes) & set(self.loaded)):
            if self.hashes[name] != self.loaded[name]:
                commands.append({"command": "setClientPassword", "username": name,
                                 "password": self.issued[name]})
        return commands

    @staticmethod
    def _role(name: str, role_of: Callable[[str], AccountRole]) -> AccountRole:
        if name == ADMIN_ACCOUNT:
            # It sends the plugin's commands and reads the answers, nothing else.
            return AccountRole("`--apply`: changes the accounts of the running broker",
                               [*may_write(CONTROL_TOPIC), *may_read(f"{CONTROL_TOPIC}/response")])
        return role_of(name)

    def document(self, role_of: Callable[[str], AccountRole]) -> dict[str, object]:
        clients, roles = [], []
        for name, hashed in sorted(self.hashes.items()):
            _, _, iterations, salt, digest = hashed.split("$")
            clients.append({"username": name, "password": digest, "salt": salt,
                            "iterations": int(iterations), "roles": [{"rolename": name}]})
            role = self._role(name, role_of)
            roles.append({"rolename": name, "textdescription": role.description,
                          "acls": [acl.entry() for acl in role.acls]})
        return {
            # Whatever no role allows is refused: a SUBSCRIBE at the SUBACK, a PUBLISH with
            # "not authorized", a delivery by not delivering.
            "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                                 "subscribe": False, "unsubscribe": True},
            "clients": clients,
            "groups": [],
            "roles": roles,
        }

    def save(self, role_of: Callable[[str], AccountRole], owner: str | None = None) -> list[Path]:
        """Write the file; then remove an older release's password file and ACL, which
        the broker no longer reads. Returns those removed. The file keeps the owner of the
        one it replaces or, the first time, of the old password file (the broker's user)."""
        old = [self.directory / OLD_PASSWORD_FILE, self.directory / OLD_ACL_FILE]
        write_private(self.path, json.dumps(self.document(role_of), indent=2) + "\n", owner,
                      like=old[0])
        removed = [path for path in old if path.exists()]
        for path in removed:
            path.unlink()
        return removed


def old_files_replaced(old_files: list[Path]) -> str:
    """For the operator: an older release's files were replaced, and what that asks of the
    broker's configuration."""
    if not old_files:
        return ""
    return (f"Removed an older release's {', '.join(str(p) for p in old_files)}, its accounts "
            "carried over (same passwords): before the restart, replace password_file and "
            "acl_file in mosquitto.conf with the plugin lines of deploy/mosquitto/ "
            "(docs/provisioning.md).\n")


def _read_dynsec(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ProvisionError(f"{path}: cannot read: {err}") from err
    hashes = {}
    try:
        for client in data["clients"]:
            hashes[client["username"]] = (f"{HASH_PREFIX}{int(client['iterations'])}$"
                                          f"{client['salt']}${client['password']}")
    except (KeyError, TypeError, ValueError) as err:
        raise ProvisionError(
            f"{path}: not a dynamic-security file with each client's username, password, "
            f"salt and iterations ({err!r})"
        ) from err
    return hashes


def _read_password_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ProvisionError(f"{path}: cannot read: {err.strerror}") from err
    hashes = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith(HASH_PREFIX):
            raise ProvisionError(
                f"{path}:{number}: not a `name:$7$...` line of a Mosquitto password file"
            )
        hashes[name] = hashed
    return hashes


def write_private(path: Path, text: str, owner: str | None = None,
                  like: Path | None = None) -> None:
    """Write a file only its owner reads (0600), atomically: a broker that starts mid-write
    never sees half an accounts file, and the secret is never world-readable.

    The file keeps the owner of the one it replaces (the broker's user, set once by
    `--broker-user`), or of `like` where there is none yet, or gets `owner`: Mosquitto reads
    these files after dropping to its own user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(temporary, 0o600)  # an older file of that name kept its mode through O_TRUNC
    uid, gid = _owner(owner) if owner else _current_owner(path, like)
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


def _current_owner(path: Path, like: Path | None = None) -> tuple[int, int]:
    for candidate in (path, like):
        try:
            st = candidate.stat() if candidate is not None else None
        except FileNotFoundError:
            continue
        if st is not None:
            return st.st_uid, st.st_gid
    return os.geteuid(), os.getegid()


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
