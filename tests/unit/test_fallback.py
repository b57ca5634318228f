"""Local fallback timing and configuration, on the manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.fallback import FallbackConfig, LocalFallback
from shouwang.clock import ManualClock
from shouwang.config import ConfigError


def fallback(clock: ManualClock, **kw: object) -> LocalFallback:
    return LocalFallback(FallbackConfig(after_s=30, **kw), mqtt=None, clock=clock)  # type: ignore[arg-type]


def test_active_only_after_the_uplink_has_been_down_long_enough() -> None:
    clock = ManualClock()
    fb = fallback(clock)
    fb.uplink_changed(True)
    assert not fb.active()
    assert fb.deadline() is None
    fb.uplink_changed(False)
    start = clock.monotonic()
    assert fb.deadline() == start + 30
    clock.advance(29_999)
    assert not fb.active()
    clock.advance(1)
    assert fb.active()
    assert fb.deadline() is None
    fb.uplink_changed(False)  # a repeated "down" does not restart the wait
    assert fb.active()
    fb.uplink_changed(True)
    assert not fb.active()


def test_down_from_start_until_first_connected() -> None:
    clock = ManualClock()
    fb = fallback(clock)
    clock.advance(30_000)
    assert fb.active()


def test_bad_apprise_configuration_is_named(tmp_path: Path) -> None:
    clock = ManualClock()
    with pytest.raises(ConfigError, match=r"fallback.apprise_urls_file .*nope: cannot read"):
        fallback(clock, apprise_urls_file=tmp_path / "nope")
    urls = tmp_path / "urls"
    urls.write_text("not-a-scheme://whatever\n")
    with pytest.raises(ConfigError, match="an Apprise URL is not valid: not-a-scheme"):
        fallback(clock, apprise_urls_file=urls)
