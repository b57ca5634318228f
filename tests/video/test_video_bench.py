"""bench/video.py in its quick mode with one camera: the rows come out and the numbers are sane.

It runs the real thing (the RTSP simulator, the camera supervisor's worker processes, decode-
only PyAV processes, a Mosquitto edge broker), so it checks that the bench measures, not how
fast this machine is: no number is held against a wall-clock limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_factor

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_prints_a_row_per_stream_and_path(tmp_path: Path) -> None:
    out = tmp_path / "video-bench.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "video.py"), "--quick", "--cameras", "1",
         "--clip-dir", os.environ.get("SHOUWANG_CLIP_CACHE", str(tmp_path / "clips")),
         "--work", str(tmp_path), "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600 * load_factor(),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    for stream in ("720p25", "1080p25"):
        assert any(stream in line and "decode-only" in line for line in table), run.stdout
        assert any(stream in line and "worker" in line for line in table), run.stdout
        assert any(line.startswith(f"| {stream} |") and "0.6" in line for line in table), \
            run.stdout  # the summary row, against the target

    result = json.loads(out.read_text())
    assert {r["stream"] for r in result["rows"]} == {"720p25", "1080p25"}
    for row in result["rows"]:
        assert row["cameras"] == 1
        assert row["bitrate_kbps"] > 500  # a camera's rate (about 1.8 and 4.1 Mbit/s)
        decode, worker = row["decode_only"], row["worker"]
        for path in (decode, worker):
            # A camera's process used some CPU, less than the two cores there are.
            assert 0 < path["cpu_pct"] < 200, row
            assert path["fps"] > 0, row  # frames came through
            assert path["fit"] >= 1, row
        # The worker analyses at its detect rate (5 fps), never more.
        assert 0 < worker["analysed_fps"] <= 5.5, row
        assert worker["analysed_fps"] <= worker["fps"], row
        # A covered lens reached the edge broker as a tamper event, after the cover was put.
        assert row["latency"]["events"] >= 1, row
        assert row["latency"]["cover_ms"]["max"] > 0, row
        assert 0 <= row["latency"]["frame_ms"]["p50"] <= row["latency"]["cover_ms"]["max"], row
        assert row["ratio"] == pytest.approx(worker["fit"] / decode["fit"], rel=1e-3)
        added = (worker["cpu_pct"] - decode["cpu_pct"]) / decode["cpu_pct"] * 100
        assert row["added_pct"] == pytest.approx(added, abs=0.05)
