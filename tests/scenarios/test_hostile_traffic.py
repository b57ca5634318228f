"""A flood of malformed messages is refused and counted, and does not fill the log (finding 9).

100,000 malformed messages once wrote 23 MB of warnings on a gateway whose disk is its only
store. Each is still refused and counted; the log says each reason once per device a minute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from shouwang.protocol import make_envelope
from shouwang.services import Mosquitto
from tests.conftest import eventually
from tests.scenarios.site import Site, community

pytestmark = pytest.mark.integration
FLOOD = 5000


async def test_a_flood_of_garbage_is_counted_whole_and_logged_in_a_few_lines(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An open broker, always: the edge's own defence is what is tested here, against traffic
    # a broker with ACLs would already refuse (unknown devices, tests/integration/
    # test_broker_acl.py).
    async with community(make_broker, tmp_path, acl=False) as site:
        metrics = site.edge.metrics
        with caplog.at_level(logging.WARNING, "edge.daemon"):
            for n in range(FLOOD):
                await site.device.publish("dev/btn-0001/event", b"\x00garbage" + bytes([n % 256]))
            for n in range(50):  # devices nobody registered, each once
                env = make_envelope(site=None, device=f"intruder-{n}", kind="event",
                                    body={"event": "press"})
                await site.device.publish(f"dev/intruder-{n}/event", env.to_bytes())
            await eventually(
                lambda: metrics.rejected_count("not_json") == FLOOD
                and metrics.rejected_count("unknown_device") == 50,
                timeout=60,
            )
            # A real press still goes through at once.
            await site.press()
            await eventually(lambda: _one_sos(site), timeout=30)
        complaints = [r for r in caplog.records if r.name == "edge.daemon"
                      and r.getMessage().startswith("rejected message")]
        assert len([r for r in complaints if "not JSON" in r.getMessage()]) == 1
        assert len(complaints) == 1 + 50


async def _one_sos(site: Site) -> bool:
    return len(await site.alerts("sos")) == 1
