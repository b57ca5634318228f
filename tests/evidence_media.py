"""Real evidence for tests: H.264 MP4 clips and JPEG snapshots made by ffmpeg, attached to alerts."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from cloud.server import CloudServer
from shouwang.protocol import make_envelope

FFMPEG = "/usr/bin/ffmpeg"


async def _ffmpeg(*args: str) -> None:
    if shutil.which(FFMPEG) is None:
        pytest.fail("Debian's ffmpeg is missing: run `make deps` (apt-get install ffmpeg)")
    proc = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")


async def h264_clip(
    path: Path, *, seconds: float = 4, size: str = "320x240", rate: int = 25,
    bitrate: str | None = None,
) -> bytes:
    """A short H.264 MP4 as a camera's clip would be (moov first, so it plays while loading).
    With `bitrate`, grain is added so the encoder really spends it (a large file quickly)."""
    more = ["-vf", "noise=alls=40:allf=t", "-preset", "ultrafast", "-b:v", bitrate,
            "-maxrate", bitrate, "-bufsize", bitrate] if bitrate else []
    await _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-t", str(seconds),
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "baseline", *more,
        "-movflags", "+faststart", str(path),
    )
    return await asyncio.to_thread(path.read_bytes)


async def jpeg_snapshot(path: Path, size: str = "320x240") -> bytes:
    await _ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}", "-frames:v", "1", str(path))
    return await asyncio.to_thread(path.read_bytes)


async def attach(
    cloud: CloudServer, alert: dict[str, Any], data: bytes, content_type: str, *,
    device: str = "cam-door-1", captured_ts: int = 1_795_000_000_000, site: str | None = None,
    kind: str | None = None,
) -> str:
    """Store `data` as the cloud does after an upload and link it to `alert` (its envelope)."""
    assert cloud.evidence is not None
    sha = hashlib.sha256(data).hexdigest()
    path = cloud.evidence.path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_bytes, data)
    await cloud.evidence.insert(make_envelope(
        site=site or alert["site"], device=device, kind="evidence", ts=captured_ts, body={
            "sha256": sha, "size": len(data), "content_type": content_type,
            "alert": alert["id"], "captured_ts": captured_ts,
            **({"kind": kind} if kind else {})}), received_ms=captured_ts)
    return sha
