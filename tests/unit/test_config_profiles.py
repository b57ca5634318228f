"""Profiles and config files: valid ones load, wrong ones name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import EdgeConfig
from edge.daemon import EdgeDaemon
from shouwang.config import ConfigError, load_yaml
from shouwang.profiles import load_profiles


def test_shipped_profiles_load() -> None:
    profiles = load_profiles()
    assert {"emergency_button", "wearable"} <= set(profiles)
    button = profiles["emergency_button"]
    assert button.alerting_events["press"].type == "sos"
    assert button.alerting_events["press"].severity == "critical"
    assert profiles["wearable"].fields["spo2"].check(140) == "140 is above the maximum 100"
    assert profiles["wearable"].fields["heart_rate"].check("80") == "expected int, got str"
    assert profiles["wearable"].fields["worn"].check(1) == "expected bool, got int"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_profile_with_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    write(tmp_path, "thing.yaml", "kind: thing\ndescription: x\nreport_interval_s: 5\ncolour: red\n")
    with pytest.raises(ConfigError, match=r"thing\.yaml: colour: unknown key"):
        load_profiles(tmp_path)


def test_profile_with_impossible_range_is_refused(tmp_path: Path) -> None:
    write(
        tmp_path, "thing.yaml",
        "kind: thing\ndescription: x\nreport_interval_s: 5\n"
        "fields:\n  t: {type: int, min: 10, max: 1}\n",
    )
    with pytest.raises(ConfigError, match=r"fields\.t: .*min 10.0 is greater than max 1.0"):
        load_profiles(tmp_path)


def test_profile_kind_must_match_file_name(tmp_path: Path) -> None:
    write(tmp_path, "thing.yaml", "kind: other\ndescription: x\nreport_interval_s: 5\n")
    with pytest.raises(ConfigError, match="must match the file name"):
        load_profiles(tmp_path)


SITE = """
site: s1
edge_broker: {port: 1883}
cloud_broker: {port: 1884}
devices:
  - {id: b1, profile: emergency_button}
"""


def test_edge_config_loads(tmp_path: Path) -> None:
    config = load_yaml(write(tmp_path, "site.yaml", SITE), EdgeConfig)
    assert config.site == "s1"
    assert config.devices[0].profile == "emergency_button"


def test_edge_config_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("cloud_broker: {port: 1884}", "cloud_broker: {prot: 1884}"))
    with pytest.raises(ConfigError) as err:
        load_yaml(path, EdgeConfig)
    assert str(path) in str(err.value)
    assert "cloud_broker.prot: unknown key" in str(err.value)


def test_edge_config_bad_port_type(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("port: 1883", "port: eighteen"))
    with pytest.raises(ConfigError, match=r"edge_broker\.port: Input should be a valid integer"):
        load_yaml(path, EdgeConfig)


def test_edge_config_duplicate_device(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE + "  - {id: b1, profile: wearable}\n")
    with pytest.raises(ConfigError, match=r"duplicate device id 'b1'"):
        load_yaml(path, EdgeConfig)


def test_edge_refuses_a_device_with_an_unknown_profile(tmp_path: Path) -> None:
    config = load_yaml(write(tmp_path, "site.yaml", SITE.replace("emergency_button", "toaster")), EdgeConfig)
    with pytest.raises(ConfigError, match=r"devices\[0\]\.profile: unknown profile 'toaster'"):
        EdgeDaemon(config)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml", EdgeConfig)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(write(tmp_path, "bad.yaml", "site: [unclosed\n"), EdgeConfig)


def test_password_comes_from_environment_not_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = load_yaml(
        write(tmp_path, "site.yaml", SITE.replace("{port: 1883}", "{port: 1883, username: gw1, password_env: GW1_PW}")),
        EdgeConfig,
    )
    with pytest.raises(ConfigError, match="GW1_PW is not set"):
        config.edge_broker.password()
    monkeypatch.setenv("GW1_PW", "s3cret")
    assert config.edge_broker.password() == "s3cret"
    assert "s3cret" not in repr(config)


def test_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    config = load_yaml(
        write(tmp_path, "site.yaml", SITE.replace("{port: 1883}", f"{{port: 1883, username: gw1, password_file: {tmp_path}/nope}}")),
        EdgeConfig,
    )
    with pytest.raises(ConfigError, match=r"password_file .*/nope: cannot read: No such file"):
        config.edge_broker.password()


def test_cli_check_names_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shouwang.cli import main

    good = write(tmp_path, "good.yaml", SITE)
    assert main(["edge", "check", "--config", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"
    bad = write(tmp_path, "bad.yaml", SITE.replace("emergency_button", "toaster"))
    assert main(["edge", "check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"shouwang: configuration error: {bad}: devices[0].profile: unknown profile 'toaster'")
