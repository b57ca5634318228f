"""Firmware configs: strict loading, matching by version range, and the push-and-ack machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.firmware import (
    ConfigIssue,
    ConfigPusher,
    FirmwareConfigs,
    PushStep,
    VersionRange,
    parse_version,
)
from shouwang.clock import ManualClock
from shouwang.config import ConfigError
from shouwang.profiles import load_profiles

T0 = 1_767_225_600_000
S = 1000
TOPIC = "dev/wear-1/config"

WEARABLE = """\
model: {model}
firmware: "{firmware}"
profile: wearable
config_version: {version}
settings:
  report_interval_s: 60
  heart_rate_high_bpm: 130
"""


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def wearable(
    root: Path, rel: str, model: str = "SW-X", firmware: str = "1", version: int = 1
) -> Path:
    return write(root, rel, WEARABLE.format(model=model, firmware=firmware, version=version))


# --- versions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.3.1", (2, 3, 1)),
        ("v2.3", (2, 3)),
        ("2.0.0", (2,)),
        ("2.3.1-rc1+b7", (2, 3, 1)),
        ("2.x", None),
        ("", None),
        ("1.2.3.4.5", None),
    ],
)
def test_parse_version(text: str, expected: tuple[int, ...] | None) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("2.3", ["2.3", "2.3.0", "2.3.9"], ["2.4", "2.2.9", "2.30"]),
        (">=2.0,<3", ["2", "2.0.0", "2.99.1"], ["1.9.9", "3", "3.0.1"]),
        ("==1.4.2", ["1.4.2", "1.4.2.0"], ["1.4.1", "1.4.3", "1.4"]),
        (">1.0, <=1.2", ["1.0.1", "1.2", "1.2.0"], ["1.0", "1.2.1"]),
    ],
)
def test_version_ranges(spec: str, inside: list[str], outside: list[str]) -> None:
    r = VersionRange.parse(spec)
    assert [v for v in inside if parse_version(v) in r] == inside
    assert [v for v in outside if parse_version(v) in r] == []


# --- loading -------------------------------------------------------------------------------


def test_shipped_configs_load_and_match_by_range() -> None:
    configs = FirmwareConfigs.load(profiles=load_profiles())
    assert len(configs) == 5
    assert {c.profile for c in configs} == {"wearable", "emergency_button", "water_meter"}
    cases = {
        ("SW-W1", "2.3.1"): 3,
        ("SW-W1", "2.0"): 3,
        ("SW-W1", "3.0.2"): 1,
        ("SW-W2", "1.4.7"): "2025-11-a",
        ("SW-B1", "1.2"): 2,
        ("SW-M1", "7.0"): 1,
    }
    for (model, firmware), version in cases.items():
        cfg = configs.match(model, firmware)
        assert cfg is not None, (model, firmware)
        assert cfg.config_version == version
    for model, firmware in [
        ("SW-W1", "1.9"),
        ("SW-W1", "4.0"),
        ("SW-W2", "1.5"),
        ("SW-W1", "latest"),
        ("NOPE", "1.0"),
    ]:
        assert configs.match(model, firmware) is None
    w1 = configs.match("SW-W1", "2.3.1")
    assert w1 is not None
    assert w1.body() == {
        "config_version": 3,
        "settings": {
            "report_interval_s": 60,
            "heart_rate_high_bpm": 130,
            "heart_rate_low_bpm": 40,
            "spo2_low_pct": 90,
            "fall_sensitivity": "medium",
            "fall_cancel_window_s": 30,
            "sos_debounce_ms": 800,
            "low_battery_pct": 20,
        },
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            WEARABLE.format(model="SW-X", firmware="1", version=1) + "colour: red\n",
            r"SW-X_1\.yaml: colour: unknown key",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="1", version=1) + "  vibrate: true\n",
            r"SW-X_1\.yaml: settings\.vibrate: unknown key",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="1", version=1).replace("130", '"130"'),
            r"SW-X_1\.yaml: settings\.heart_rate_high_bpm: Input should be a valid integer",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="1", version=1).replace("130", "true"),
            r"settings\.heart_rate_high_bpm: Input should be a valid integer",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="1", version=1).replace("130", "300"),
            r"settings\.heart_rate_high_bpm: Input should be less than or equal to 220",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="1", version=1).replace("130", "70")
            + "  heart_rate_low_bpm: 80\n",
            r"SW-X_1\.yaml: settings: Value error, heart_rate_low_bpm 80 must be below heart_rate_high_bpm 70",
        ),
        (
            WEARABLE.format(model="SW-X", firmware=">=3,<2", version=1),
            r"SW-X_1\.yaml: firmware: Value error, '>=3,<2' matches no version",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="~2.3", version=1),
            r"firmware: Value error, '~2.3' is not a version or a comparison",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="1", version=-1),
            r"config_version: Value error, must not be negative",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="1", version="true"),
            r"config_version\.int: Input should be a valid integer",
        ),
        (
            "model: SW-X\nfirmware: '1'\nprofile: wearable\nconfig_version: 1\nsettings: {}\n",
            r"settings: Dictionary should have at least 1 item",
        ),
        (
            WEARABLE.format(model="SW-X", firmware="1", version=1).replace(
                "profile: wearable\n", ""
            ),
            r"SW-X_1\.yaml: profile: Field required",
        ),
    ],
)
def test_invalid_config_names_file_and_key(tmp_path: Path, text: str, error: str) -> None:
    write(tmp_path, "wearable/SW-X_1.yaml", text)
    with pytest.raises(ConfigError, match=error):
        FirmwareConfigs.load(tmp_path)


def test_overlapping_firmware_for_one_model_is_refused_naming_both_files(tmp_path: Path) -> None:
    # Files load in name order, so the 2.5 file is first and the range is refused against it.
    wide = wearable(tmp_path, "wearable/SW-X_2.x.yaml", firmware=">=2.0,<3")
    narrow = wearable(tmp_path, "wearable/SW-X_2.5.yaml", firmware="2.5")
    with pytest.raises(ConfigError) as err:
        FirmwareConfigs.load(tmp_path)
    assert str(err.value) == (
        f"{wide}: model SW-X firmware '>=2.0,<3' overlaps firmware '2.5' in {narrow}"
    )


def test_identical_firmware_in_two_files_is_refused(tmp_path: Path) -> None:
    wearable(tmp_path, "wearable/SW-X_a.yaml", firmware="1.0")
    wearable(tmp_path, "wearable/SW-X_b.yaml", firmware="1.0")
    with pytest.raises(ConfigError, match=r"SW-X_b\.yaml: .*overlaps.* in .*SW-X_a\.yaml"):
        FirmwareConfigs.load(tmp_path)


def test_adjacent_ranges_and_other_models_do_not_clash(tmp_path: Path) -> None:
    wearable(tmp_path, "wearable/SW-X_2.yaml", firmware=">=2,<3", version=2)
    wearable(tmp_path, "wearable/SW-X_3.yaml", firmware=">=3", version=3)
    wearable(tmp_path, "wearable/SW-Y_2.yaml", model="SW-Y", firmware=">=2,<3", version=9)
    configs = FirmwareConfigs.load(tmp_path)
    found = [configs.match(m, f) for m, f in [("SW-X", "2.9.9"), ("SW-X", "3"), ("SW-Y", "2.1")]]
    assert [c.config_version if c else None for c in found] == [2, 3, 9]


def test_folder_must_match_profile_and_file_name_the_model(tmp_path: Path) -> None:
    wearable(tmp_path, "buttons/SW-X_1.yaml")
    with pytest.raises(ConfigError, match=r"profile: 'wearable' must match the folder 'buttons'"):
        FirmwareConfigs.load(tmp_path)
    (tmp_path / "buttons/SW-X_1.yaml").unlink()
    wearable(tmp_path, "wearable/watch_1.yaml")
    with pytest.raises(
        ConfigError, match=r"watch_1\.yaml: model: the file name must start with SW-X_"
    ):
        FirmwareConfigs.load(tmp_path)


def test_profiles_cross_check(tmp_path: Path) -> None:
    profiles = load_profiles()
    path = write(
        tmp_path,
        "wearable/SW-X_1.yaml",
        WEARABLE.format(model="SW-X", firmware="1", version=1).replace("60", "600"),
    )
    with pytest.raises(ConfigError) as err:
        FirmwareConfigs.load(tmp_path, profiles)
    assert str(err.value) == (
        f"{path}: settings.report_interval_s: 600 is longer than the wearable profile's"
        " report_interval_s 60"
    )
    path.unlink()
    write(
        tmp_path,
        "toaster/SW-T_1.yaml",
        "model: SW-T\nfirmware: '1'\nprofile: toaster\nconfig_version: 1\n"
        "settings: {report_interval_s: 60}\n",
    )
    with pytest.raises(ConfigError, match=r"SW-T_1\.yaml: profile: unknown profile 'toaster'"):
        FirmwareConfigs.load(tmp_path, profiles)
    # Without profiles an unlisted kind takes the common settings only.
    assert len(FirmwareConfigs.load(tmp_path)) == 1


# --- pushing -------------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def pusher(tmp_path: Path, clock: ManualClock) -> ConfigPusher:
    wearable(tmp_path, "wearable/SW-X_2.yaml", firmware=">=2,<3", version=3)
    wearable(tmp_path, "wearable/SW-X_3.yaml", firmware=">=3", version=7)
    return ConfigPusher(FirmwareConfigs.load(tmp_path), clock, ack_timeout_s=120)


BODY_V3 = {"config_version": 3, "settings": {"report_interval_s": 60, "heart_rate_high_bpm": 130}}


def announce(pusher: ConfigPusher, firmware: str = "2.3.1", version: object = None) -> PushStep:
    body: dict[str, object] = {"state": "online", "model": "SW-X", "firmware": firmware}
    if version is not None:
        body["config_version"] = version
    return pusher.observe_status("wear-1", body)


def run_ticks(pusher: ConfigPusher, clock: ManualClock, seconds: int) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for _ in range(seconds):
        clock.advance(S)
        issues += pusher.tick()
    return issues


def test_push_then_ack_by_event(pusher: ConfigPusher, clock: ManualClock) -> None:
    assert announce(pusher, version=1) == PushStep(TOPIC, publish=BODY_V3)
    clock.advance(5 * S)
    assert pusher.observe_event("wear-1", "config_applied", {"config_version": 3}) == PushStep(
        TOPIC
    )
    assert pusher.snapshot()["wear-1"] == {
        "state": "applied",
        "model": "SW-X",
        "firmware": "2.3.1",
        "config_version": 3,
        "applied_version": 3,
    }
    assert run_ticks(pusher, clock, 600) == []
    assert pusher.next_deadline() is None


def test_push_then_ack_by_status(pusher: ConfigPusher, clock: ManualClock) -> None:
    assert announce(pusher).publish == BODY_V3
    clock.advance(5 * S)
    assert pusher.observe_status("wear-1", {"config_version": "3"}) == PushStep(TOPIC)
    assert pusher.snapshot()["wear-1"]["state"] == "applied"
    assert run_ticks(pusher, clock, 600) == []


def test_no_ack_gives_exactly_one_timeout_at_the_deadline(
    pusher: ConfigPusher, clock: ManualClock
) -> None:
    announce(pusher)
    assert pusher.next_deadline() == 120.0
    assert run_ticks(pusher, clock, 119) == []
    assert run_ticks(pusher, clock, 1) == [
        ConfigIssue(
            "wear-1", "ack_timeout", "config_version 3 not acknowledged within 120 s", T0 + 120 * S
        )
    ]
    assert run_ticks(pusher, clock, 3600) == []
    # The device reconnects without having applied it: no new publish, no second report.
    assert announce(pusher, version=1) == PushStep(TOPIC)
    # A late ack still counts.
    assert pusher.observe_event("wear-1", "config_applied", {"config_version": 3}) == PushStep(
        TOPIC
    )
    assert pusher.snapshot()["wear-1"]["state"] == "applied"


def test_wrong_version_applied_is_reported_once(pusher: ConfigPusher, clock: ManualClock) -> None:
    announce(pusher)
    clock.advance(2 * S)
    assert pusher.observe_event("wear-1", "config_applied", {"config_version": 2}) == PushStep(
        TOPIC,
        issues=(
            ConfigIssue(
                "wear-1",
                "version_mismatch",
                "device applied config_version 2, expected 3",
                T0 + 2 * S,
            ),
        ),
    )
    assert pusher.observe_event("wear-1", "config_applied", {"config_version": 2}) == PushStep(
        TOPIC
    )
    assert pusher.observe_status("wear-1", {"config_version": 2}) == PushStep(TOPIC)
    assert run_ticks(pusher, clock, 600) == []
    assert pusher.snapshot()["wear-1"]["state"] == "failed"


def test_device_reconnecting_before_it_applied_is_not_a_mismatch(
    pusher: ConfigPusher, clock: ManualClock
) -> None:
    announce(pusher, version=1)
    clock.advance(10 * S)
    assert announce(pusher, version=1) == PushStep(TOPIC)  # no second publish, no issue
    assert announce(pusher, version=3) == PushStep(TOPIC)
    assert pusher.snapshot()["wear-1"]["state"] == "applied"


def test_device_that_already_has_the_config_gets_no_publish(pusher: ConfigPusher) -> None:
    assert announce(pusher, version=3) == PushStep(TOPIC)
    assert pusher.snapshot()["wear-1"]["state"] == "applied"


def test_applied_device_that_lost_its_config_gets_it_again(
    pusher: ConfigPusher, clock: ManualClock
) -> None:
    announce(pusher, version=3)
    assert announce(pusher, version=0) == PushStep(TOPIC, publish=BODY_V3)
    assert run_ticks(pusher, clock, 120) == [
        ConfigIssue(
            "wear-1", "ack_timeout", "config_version 3 not acknowledged within 120 s", T0 + 120 * S
        )
    ]


def test_firmware_upgrade_pushes_the_new_config(pusher: ConfigPusher, clock: ManualClock) -> None:
    announce(pusher, version=3)
    step = announce(pusher, firmware="3.1", version=3)
    assert step.publish is not None
    assert step.publish["config_version"] == 7


def test_no_config_reported_once_and_retained_config_cleared(
    pusher: ConfigPusher, clock: ManualClock
) -> None:
    assert announce(pusher, firmware="1.9") == PushStep(
        TOPIC,
        clear=True,
        issues=(ConfigIssue("wear-1", "no_config", "no config for model SW-X firmware 1.9", T0),),
    )
    for _ in range(5):
        assert announce(pusher, firmware="1.9") == PushStep(TOPIC)
    assert pusher.observe_event("wear-1", "config_applied", {"config_version": 3}) == PushStep(
        TOPIC
    )
    assert run_ticks(pusher, clock, 600) == []


def test_status_without_model_and_unrelated_events_do_nothing(pusher: ConfigPusher) -> None:
    assert pusher.observe_status("wear-1", {"state": "online"}) == PushStep(TOPIC)
    assert pusher.observe_status("wear-1", {"config_version": 3}) == PushStep(TOPIC)
    assert pusher.observe_event("wear-1", "sos", {}) == PushStep(TOPIC)
    assert pusher.observe_event("wear-1", "config_applied", {}) == PushStep(TOPIC)
    assert pusher.snapshot()["wear-1"]["state"] == "idle"
