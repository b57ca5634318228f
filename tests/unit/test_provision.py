"""`shouwang edge|cloud provision` refuse what cannot be an account, and say which."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from shouwang.broker_accounts import Accounts, hash_password, verify_password
from shouwang.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def dynsec(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "dynamic-security.json").read_text())
    return data


def site_file(tmp_path: Path, *devices: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "site": "gw-1", "edge_broker": {}, "cloud_broker": {},
        "devices": [{"id": d, "profile": "emergency_button"} for d in devices],
    }))
    return path


def test_a_device_id_that_cannot_be_an_account_is_refused_by_name(tmp_path: Path) -> None:
    code, _, err = run("edge", "provision", "--config", str(site_file(tmp_path, "btn:1")),
                       "--dir", str(tmp_path / "b"))
    assert code == 2
    assert "device id 'btn:1' cannot be a broker account" in err
    assert not (tmp_path / "b" / "dynamic-security.json").exists()


def test_the_service_account_names_are_not_for_devices_or_sites(tmp_path: Path) -> None:
    code, _, err = run("edge", "provision", "--config",
                       str(site_file(tmp_path, "shouwang-edge")), "--dir", str(tmp_path / "b"))
    assert (code, err.strip()) == (
        2, "shouwang: device id 'shouwang-edge' is the edge daemon's account name")
    code, _, err = run("edge", "provision", "--config",
                       str(site_file(tmp_path, "shouwang-admin")), "--dir", str(tmp_path / "b"))
    assert (code, err.strip()) == (
        2, "shouwang: device id 'shouwang-admin' is the broker's admin account name")
    code, _, err = run("cloud", "provision", "--site", "shouwang-admin", "--dir",
                       str(tmp_path / "c"))
    assert (code, err.strip()) == (
        2, "shouwang: site id 'shouwang-admin' is the broker's admin account name")
    code, _, err = run("cloud", "provision", "--site", "shouwang-admin", "--revoke", "--dir",
                       str(tmp_path / "c"))
    assert (code, err.strip()) == (2, "shouwang: 'shouwang-admin' is a service account, not a site")
    code, _, err = run("cloud", "provision", "--site", "shouwang-cloud", "--dir",
                       str(tmp_path / "c"))
    assert (code, err.strip()) == (
        2, "shouwang: site id 'shouwang-cloud' is a cloud worker account name")
    for account in ("shouwang-ingest", "shouwang-alert-downlink", "shouwang-watchlist-downlink"):
        code, _, err = run("cloud", "provision", "--site", account, "--dir", str(tmp_path / "c"))
        assert (code, err.strip()) == (
            2, f"shouwang: site id {account!r} is a cloud worker account name")
        code, _, err = run("cloud", "provision", "--site", account, "--revoke", "--dir",
                           str(tmp_path / "c"))
        assert (code, err.strip()) == (
            2, f"shouwang: {account!r} is a cloud worker account, not a site")


def test_a_device_leaving_the_site_loses_its_account_and_rotate_renews_one(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "b"
    code, out, _ = run("edge", "provision", "--config", str(site_file(tmp_path, "a", "b")),
                       "--dir", str(directory))
    assert code == 0
    assert "2 device account(s) issued" in out
    before = Accounts.load(directory).hashes
    code, out, _ = run("edge", "provision", "--config", str(site_file(tmp_path, "a")),
                       "--dir", str(directory), "--rotate", "a")
    assert code == 0
    assert "1 device account(s) issued, 0 kept, 1 removed: b" in out
    after = Accounts.load(directory).hashes
    assert sorted(after) == ["a", "shouwang-edge"]
    assert after["a"] != before["a"]  # a new hash for the new password
    password = out.split("password=")[1].split()[0]
    assert verify_password(password, after["a"])
    # b's role went with its account.
    assert [r["rolename"] for r in dynsec(directory)["roles"]] == ["a", "shouwang-edge"]
    code, _, err = run("edge", "provision", "--config", str(site_file(tmp_path, "a")),
                       "--dir", str(directory), "--rotate", "zzz")
    assert (code, err.strip()) == (2, "shouwang: --rotate zzz: not a device of this site")


def test_a_lost_daemon_password_file_is_replaced_not_trusted(tmp_path: Path) -> None:
    directory = tmp_path / "b"
    site = str(site_file(tmp_path, "a"))
    assert run("edge", "provision", "--config", site, "--dir", str(directory))[0] == 0
    (directory / "edge.password").write_text("edited by hand\n")
    assert run("edge", "provision", "--config", site, "--dir", str(directory))[0] == 0
    secret = (directory / "edge.password").read_text().strip()
    hashed = Accounts.load(directory).hashes["shouwang-edge"]
    assert secret != "edited by hand"
    assert verify_password(secret, hashed)
    assert stat.S_IMODE((directory / "edge.password").stat().st_mode) == 0o600


def test_the_hash_is_mosquittos_pbkdf2_format() -> None:
    # A line `mosquitto_passwd -b` wrote for the password "secret" (Mosquitto 2.0.11).
    line = ("$7$101$W59H3NLWoLjvJPwk$bnanfwddn1BHsbxXx5D+uN2f4mAPiAypiQvXhH8JiNHS+UBSIv9Wllt3V"
            "duGUAgFUNS8PNcnPRrJhPQLhQgAFw==")
    assert verify_password("secret", line)
    assert not verify_password("Secret", line)
    assert hash_password("secret").startswith("$7$101$")


def acls(role: dict[str, Any]) -> list[tuple[str, str]]:
    assert all(acl["allow"] is True for acl in role["acls"])
    return [(acl["acltype"], acl["topic"]) for acl in role["acls"]]


def test_the_edge_roles_are_the_old_acl_and_everything_else_is_denied(tmp_path: Path) -> None:
    directory = tmp_path / "b"
    assert run("edge", "provision", "--config", str(site_file(tmp_path, "btn-1")), "--dir",
               str(directory))[0] == 0
    data = dynsec(directory)
    assert data["defaultACLAccess"] == {"publishClientSend": False,
                                        "publishClientReceive": False, "subscribe": False,
                                        "unsubscribe": True}
    assert data["groups"] == []
    assert [(c["username"], c["roles"]) for c in data["clients"]] == [
        ("btn-1", [{"rolename": "btn-1"}]), ("shouwang-edge", [{"rolename": "shouwang-edge"}])]
    roles = {r["rolename"]: acls(r) for r in data["roles"]}
    read = ("subscribePattern", "publishClientReceive")
    assert roles["btn-1"] == [
        ("publishClientSend", "dev/btn-1/telemetry"), ("publishClientSend", "dev/btn-1/event"),
        ("publishClientSend", "dev/btn-1/status"),
        *((kind, "dev/btn-1/config") for kind in read), *((kind, "dev/btn-1/cmd") for kind in read)]
    assert roles["shouwang-edge"] == [
        ("publishClientSend", "dev/#"), *((kind, "dev/#") for kind in read),
        ("publishClientSend", "local/#"), *((kind, "local/#") for kind in read)]


def test_the_cloud_roles_are_the_old_acl_with_ingests_shared_subscription(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "c"
    for site in ("site-a", "site-b"):
        assert run("cloud", "provision", "--site", site, "--dir", str(directory))[0] == 0
    roles = {r["rolename"]: acls(r) for r in dynsec(directory)["roles"]}
    read = ("subscribePattern", "publishClientReceive")
    assert roles == {
        "shouwang-ingest": [*((kind, "site/+/up/#") for kind in read),
                            ("subscribePattern", "$share/cloud/site/+/up/#"),
                            ("publishClientSend", "site/+/down/ack")],
        "shouwang-alert-downlink": [("publishClientSend", "site/+/down/alert")],
        "shouwang-watchlist-downlink": [("publishClientSend", "site/+/down/watchlist")],
        "site-a": [("publishClientSend", "site/site-a/up/#"),
                   *((kind, "site/site-a/down/#") for kind in read)],
        "site-b": [("publishClientSend", "site/site-b/up/#"),
                   *((kind, "site/site-b/down/#") for kind in read)],
    }
    code, out, _ = run("cloud", "provision", "--site", "site-b", "--revoke", "--dir",
                       str(directory))
    assert code == 0
    assert "systemctl restart mosquitto" in out
    assert "site-b" not in {r["rolename"] for r in dynsec(directory)["roles"]}


def test_an_old_password_file_is_carried_over_and_removed(tmp_path: Path) -> None:
    """A gateway provisioned by an older release: its devices keep their passwords, the
    old files go (the broker no longer reads them), and the command says so."""
    directory = tmp_path / "b"
    directory.mkdir()
    old = {"a": hash_password("a's password"), "shouwang-edge": hash_password("edge's")}
    (directory / "passwd").write_text("".join(f"{n}:{h}\n" for n, h in old.items()))
    (directory / "acl").write_text("pattern write dev/%u/event\n")
    (directory / "edge.password").write_text("edge's\n")
    os.chmod(directory / "passwd", 0o600)
    owner = (os.geteuid(), os.getegid())
    if os.geteuid() == 0:  # as `--broker-user mosquitto` left it: the new file keeps its owner
        owner = (65534, 65534)
        os.chown(directory / "passwd", *owner)
    code, out, _ = run("edge", "provision", "--config", str(site_file(tmp_path, "a")),
                       "--dir", str(directory))
    assert code == 0
    assert "0 device account(s) issued, 1 kept, 0 removed" in out
    assert (f"Removed an older release's {directory / 'passwd'}, {directory / 'acl'}, its "
            "accounts carried over (same passwords)") in out
    assert "replace password_file and acl_file in mosquitto.conf" in out
    assert Accounts.load(directory).hashes == old
    assert verify_password("a's password", Accounts.load(directory).hashes["a"])
    assert not (directory / "passwd").exists()
    assert not (directory / "acl").exists()
    written = (directory / "dynamic-security.json").stat()
    assert (stat.S_IMODE(written.st_mode), written.st_uid, written.st_gid) == (0o600, *owner)
    # Once: the next run has nothing to carry over.
    code, out, _ = run("edge", "provision", "--config", str(site_file(tmp_path, "a")),
                       "--dir", str(directory))
    assert "older release" not in out


def test_a_broken_accounts_file_is_refused_by_name(tmp_path: Path) -> None:
    directory = tmp_path / "b"
    directory.mkdir()
    (directory / "dynamic-security.json").write_text('{"clients": [{"username": "a"}]}')
    code, _, err = run("edge", "provision", "--config", str(site_file(tmp_path, "a")),
                       "--dir", str(directory))
    assert code == 2
    assert f"{directory / 'dynamic-security.json'}: not a dynamic-security file" in err


def test_a_missing_dynamic_security_plugin_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shouwang import services

    assert services.dynamic_security_plugin().name == "mosquitto_dynamic_security.so"
    monkeypatch.setattr(services.glob, "glob", lambda pattern: [])
    broker = services.Mosquitto(tmp_path, accounts=tmp_path / "accounts")
    with pytest.raises(services.ServiceError, match="Debian's `mosquitto` package"):
        broker.start()
    assert broker.proc is None


def test_the_admin_account_may_only_send_the_plugins_commands(tmp_path: Path) -> None:
    directory = tmp_path / "b"
    assert run("edge", "provision", "--config", str(site_file(tmp_path, "a")), "--dir",
               str(directory))[0] == 0
    assert "shouwang-admin" not in Accounts.load(directory).hashes  # only with --apply
    assert not (directory / "admin.password").exists()
    code, out, _ = run("edge", "provision", "--config", str(site_file(tmp_path, "a")), "--dir",
                       str(directory), "--apply")
    assert code == 0
    assert "shouwang-admin has a new password: restart the broker this once" in out
    roles = {r["rolename"]: acls(r) for r in dynsec(directory)["roles"]}
    assert roles["shouwang-admin"] == [
        ("publishClientSend", "$CONTROL/dynamic-security/v1"),
        ("subscribePattern", "$CONTROL/dynamic-security/v1/response"),
        ("publishClientReceive", "$CONTROL/dynamic-security/v1/response")]
    # Kept by later runs, with or without --apply.
    assert run("edge", "provision", "--config", str(site_file(tmp_path, "a")), "--dir",
               str(directory))[0] == 0
    assert "shouwang-admin" in Accounts.load(directory).hashes
