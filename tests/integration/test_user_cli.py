"""`shouwang cloud user ...`: accounts from the command line, never a password in argv."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import yaml

from cloud.access.config import AccessConfig
from cloud.access.users import Access
from cloud.store import Store
from shouwang.cli import main
from shouwang.clock import SystemClock

pytestmark = pytest.mark.integration


def _login(database_url: str, username: str, password: str) -> str:
    async def go() -> str:
        store = await Store.connect(database_url)
        try:
            session = await Access(store.engine, SystemClock(), AccessConfig()).login(
                username, password, None)
            return session.principal.role
        finally:
            await store.close()
    return asyncio.run(go())


def test_add_list_disable_and_passwd(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite"
    config = tmp_path / "cloud.yaml"
    config.write_text(yaml.safe_dump({"broker": {}, "database_url": database_url}))
    secret = tmp_path / "pw"
    secret.write_text("station-a-password\n")
    base = ["cloud", "user"]
    assert main([*base, "add", "--config", str(config), "--username", "police-a", "--role",
                 "police", "--scope", "d1/s1/c-a", "--scope", "d1/s1/c-b",
                 "--password-file", str(secret)]) == 0
    assert main([*base, "add", "--config", str(config), "--username", "family-1", "--role",
                 "family", "--scope", "r-1", "--password-file", str(secret)]) == 0
    assert main([*base, "add", "--config", str(config), "--username", "w", "--role", "worker",
                 "--scope", "d1/s1", "--password-file", str(secret)]) == 1
    assert "scope: a community worker's scope is a grid" in capsys.readouterr().err
    assert main([*base, "add", "--config", str(config), "--username", "x", "--role", "admin",
                 "--password-file", str(tmp_path / "missing")]) == 2
    assert "--password-file" in capsys.readouterr().err
    assert main([*base, "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "family-1\tfamily\tenabled\tr-1",
        "police-a\tpolice\tenabled\td1/s1/c-a,d1/s1/c-b",
    ]
    assert _login(database_url, "police-a", "station-a-password") == "police"

    monkeypatch.setattr("sys.stdin", io.StringIO("a-new-password-from-stdin\n"))
    assert main([*base, "passwd", "--config", str(config), "--username", "police-a",
                 "--password-file", "-"]) == 0
    assert _login(database_url, "police-a", "a-new-password-from-stdin") == "police"
    assert main([*base, "disable", "--config", str(config), "--username", "police-a"]) == 0
    assert main([*base, "disable", "--config", str(config), "--username", "nobody"]) == 1
    capsys.readouterr()
    assert main([*base, "list", "--config", str(config)]) == 0
    assert "police-a\tpolice\tdisabled" in capsys.readouterr().out
    # Nothing the CLI stored or logged holds the password itself.
    assert b"station-a-password" not in (tmp_path / "cloud.sqlite").read_bytes()


def test_cloud_check_validates_the_escalation_file(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "escalation.yaml"
    policy.write_text(yaml.safe_dump({"policies": {"sos": {"stages": [
        {"name": "family", "after_s": 0, "notify": ["family"], "channel": "sms"}]}}}))
    config = tmp_path / "cloud.yaml"
    config.write_text(yaml.safe_dump({"broker": {}, "escalation": {"file": str(policy)}}))
    assert main(["cloud", "check", "--config", str(config)]) == 2
    assert f"{policy}: policies.sos.stages.0.channel: unknown key" in capsys.readouterr().err


def test_a_user_s_display_name_is_set_later_without_ending_the_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`user name`: the name the board and the family page show ("网格员 李华 已出发")."""
    database_url = f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite"
    config = tmp_path / "cloud.yaml"
    config.write_text(yaml.safe_dump({"broker": {}, "database_url": database_url}))
    secret = tmp_path / "pw"
    secret.write_text("worker-li-password\n")
    base = ["cloud", "user"]
    assert main([*base, "add", "--config", str(config), "--username", "worker-li", "--role",
                 "worker", "--scope", "d1/s1/c-a/g1", "--password-file", str(secret)]) == 0

    async def access_do(what: str, token: str = "") -> tuple[str, bool]:
        store = await Store.connect(database_url)
        try:
            access = Access(store.engine, SystemClock(), AccessConfig())
            if what == "login":
                return (await access.login("worker-li", "worker-li-password", None)).token, True
            user = await access.user("worker-li")
            assert user is not None
            return user.display_name, await access.authenticate(token) is not None
        finally:
            await store.close()

    token, _ = asyncio.run(access_do("login"))
    assert main([*base, "name", "--config", str(config), "--username", "worker-li",
                 "--display-name", "李华"]) == 0
    assert asyncio.run(access_do("check", token)) == ("李华", True)
    assert main([*base, "name", "--config", str(config), "--username", "nobody",
                 "--display-name", "x"]) == 1
    assert main([*base, "name", "--config", str(config), "--username", "worker-li",
                 "--display-name", "  "]) == 1
    assert "display-name" in capsys.readouterr().err
