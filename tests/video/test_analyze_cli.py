"""`shouwang video analyze`: a camera's analytics over a clip, one JSON line per event.

An installer replays a clip in which the lens is covered from 10 s to 17 s: the command prints
the tamper and its clearing at the stream times the live daemon would have raised them, and a
file that is not video gets a clear error naming it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import orjson
import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COVER = (10.0, 17.0)
RAISE_S, CLEAR_S = 3.0, 2.0


def covered_clip(source: Path, target: Path) -> Path:
    """`source` with the lens covered (a dark, flat picture) during COVER, re-encoded."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        source_stream = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=25)
        stream.options = {"preset": "ultrafast", "bframes": "0"}
        stream.width, stream.height = source_stream.width, source_stream.height
        stream.pix_fmt = "yuv420p"
        for frame in inp.decode(video=0):
            image = frame.to_ndarray(format="bgr24")
            t = float(frame.time or 0)
            if COVER[0] <= t < COVER[1]:
                image = np.full_like(image, 6)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return target


def camera_file(tmp_path: Path) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump({
        "id": "cam-gate", "detect": {"fps": 5, "width": 640},
        "health": {"learn_s": 3, "occluded": {"raise_after_s": RAISE_S, "clear_after_s": CLEAR_S}},
    }))
    return path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shouwang", "video", "analyze", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_a_covered_lens_in_a_clip_is_a_tamper_and_its_clearing_at_stream_times(
    camera_clip: Callable[..., Path], tmp_path: Path
) -> None:
    clip = covered_clip(camera_clip(width=640, height=360, seconds=25), tmp_path / "covered.mp4")
    out = tmp_path / "events.jsonl"
    done = analyze("--camera", str(camera_file(tmp_path)), str(clip), "--out", str(out))
    assert done.returncode == 0, done.stderr
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(e["type"], e.get("cause")) for e in events] == [
        ("tamper", "occluded"), ("tamper_cleared", "occluded")
    ]
    raised, cleared = (e["t_ms"] for e in events)
    assert (COVER[0] + RAISE_S) * 1000 <= raised <= (COVER[0] + RAISE_S + 1.5) * 1000
    assert (COVER[1] + CLEAR_S) * 1000 <= cleared <= (COVER[1] + CLEAR_S + 1.5) * 1000
    assert "events" in done.stderr  # the summary goes to stderr, the events to the file


def test_a_file_that_is_not_video_is_refused_by_name(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-video.mp4"
    bogus.write_bytes(b"this is a text file, not H.264\n" * 100)
    done = analyze("--camera", str(camera_file(tmp_path)), str(bogus))
    assert done.returncode == 2
    assert "not-a-video.mp4" in done.stderr
    assert "not a video" in done.stderr
    missing = analyze("--camera", str(camera_file(tmp_path)), str(tmp_path / "nope.mp4"))
    assert (missing.returncode, "no such file" in missing.stderr) == (2, True)
