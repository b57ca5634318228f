"""Polled devices in the site config: the cjt188 block, and one link per device."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.adapters.cjt188_client import Cjt188Link
from edge.config import DeviceBinding, EdgeConfig
from shouwang.config import ConfigError, load_yaml, validate

ROOT = Path(__file__).resolve().parents[2]
SITE = "site: s-1\nedge_broker: {}\ncloud_broker: {}\n"


def site_config(tmp_path: Path, devices: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(SITE + devices, encoding="utf-8")
    return path


def test_a_device_with_both_links_is_refused_by_name(tmp_path: Path) -> None:
    path = site_config(
        tmp_path,
        """devices:
  - {id: wm-1, profile: water_meter}
  - id: wm-2
    profile: water_meter
    modbus: {host: 10.0.0.5, unit_id: 1}
    cjt188: {host: 10.0.0.6, port: 10188, address: "00000000000001"}
""",
    )
    with pytest.raises(ConfigError) as info:
        load_yaml(path, EdgeConfig)
    message = str(info.value)
    assert message.startswith(f"{path}: devices.1: ")
    assert "device 'wm-2': modbus and cjt188 are both set" in message


def test_either_link_alone_is_accepted() -> None:
    cjt = DeviceBinding.model_validate(
        {
            "id": "a",
            "profile": "water_meter",
            "cjt188": {"host": "h", "port": 1, "address": "1" * 14},
        }
    )
    modbus = DeviceBinding.model_validate(
        {"id": "b", "profile": "water_meter", "modbus": {"host": "h", "unit_id": 1}}
    )
    assert (cjt.modbus, modbus.cjt188) == (None, None)
    assert cjt.cjt188 is not None
    assert cjt.cjt188.timeout_s == 2.0


def test_an_unquoted_address_gets_a_hint(tmp_path: Path) -> None:
    path = site_config(
        tmp_path,
        """devices:
  - id: wm-1
    profile: water_meter
    cjt188: {host: 10.0.0.6, port: 10188, address: 00000000000001}
""",
    )
    with pytest.raises(
        ConfigError, match=r"devices\.0\.cjt188\.address: .*read as the number 1: quote it"
    ):
        load_yaml(path, EdgeConfig)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"address": "0000000000001"}, "address: Value error, must be 14 digits"),
        ({"address": "AAAAAAAAAAAAAA"}, "address: Value error, must be 14 digits"),
        ({"meter_type": "heat"}, "meter_type: Input should be 'cold_water'"),
        ({"di_order": "middle"}, "di_order: Input should be 'little' or 'big'"),
        ({"baud": 2400}, "baud: unknown key"),
        ({"poll_interval_s": 900}, "(top level): Value error, unavailable_backoff_max_s must be"),
    ],
)
def test_bad_cjt188_blocks_name_the_key(block: dict[str, Any], message: str) -> None:
    data = {"host": "h", "port": 10188, "address": "00000000000001", **block}
    with pytest.raises(ConfigError, match=re.escape(f"edge.yaml: {message}")):
        validate(data, Cjt188Link, source="edge.yaml")


def test_the_documented_example_is_a_valid_site_config() -> None:
    text = (ROOT / "docs" / "cjt188.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1
    config = EdgeConfig.model_validate(yaml.safe_load(SITE + blocks[0]))
    links = [d.cjt188 for d in config.devices]
    assert [(link.address, link.meter_type) for link in links if link is not None] == [
        ("78330011223344", "cold_water"),
        ("78330011223345", "gas"),
    ]
