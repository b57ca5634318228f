"""`shouwang edge|cloud provision` refuse what cannot be an account, and say which."""

from __future__ import annotations

import contextlib
import io
import stat
from pathlib import Path

import yaml

from shouwang.broker_accounts import hash_password, verify_password
from shouwang.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


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
    assert not (tmp_path / "b" / "passwd").exists()


def test_the_service_account_names_are_not_for_devices_or_sites(tmp_path: Path) -> None:
    code, _, err = run("edge", "provision", "--config",
                       str(site_file(tmp_path, "shouwang-edge")), "--dir", str(tmp_path / "b"))
    assert (code, err.strip()) == (
        2, "shouwang: device id 'shouwang-edge' is the edge daemon's account name")
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
    before = (directory / "passwd").read_text()
    code, out, _ = run("edge", "provision", "--config", str(site_file(tmp_path, "a")),
                       "--dir", str(directory), "--rotate", "a")
    assert code == 0
    assert "1 device account(s) issued, 0 kept, 1 removed: b" in out
    after = (directory / "passwd").read_text()
    assert "\nb:" not in f"\n{after}"
    line = next(x for x in after.splitlines() if x.startswith("a:"))
    assert line not in before  # a new hash for the new password
    password = out.split("password=")[1].split()[0]
    assert verify_password(password, line.split(":", 1)[1])
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
    hashed = next(x for x in (directory / "passwd").read_text().splitlines()
                  if x.startswith("shouwang-edge:")).split(":", 1)[1]
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
