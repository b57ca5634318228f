"""A camera's entry in `site.yaml` (`cameras:`): strict, secrets from files or the environment.

```yaml
cameras:
  - id: cam-gate-01
    url: rtsp://192.0.2.10:554/stream1
    username: viewer
    password_file: /etc/shouwang/cam-gate-01.pw   # or password_env; never in the YAML
    location: 示范区/示范街道/阳光社区/东门
    analytics: []
    detect: {fps: 5, width: 640}
    stall_timeout_s: 20
    privacy_masks: [[[0, 0], [200, 0], [200, 120], [0, 120]]]
    record: {pre_s: 5, post_s: 10}
```

The password is read when the worker connects and never written into a log line or a URL
that is logged: `redacted_url` is what every message names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from edge.video.face.config import FaceConfig
from edge.video.health import HealthConfig
from edge.video.motion import MotionConfig
from edge.video.throw.calibration import FacadeConfig
from edge.video.throw.detector import ThrowConfig
from shouwang.config import ConfigError, Strict

Analytic = Literal["face", "throw"]
Point = tuple[int, int]


class DetectConfig(Strict):
    fps: float = Field(5, gt=0, le=30, description="Frames analysed per second (motion, tamper)")
    width: int = Field(
        640, ge=160, le=1920, description="Width the analysed frames are scaled to"
    )


class RecordConfig(Strict):
    pre_s: float = Field(5, ge=0, le=30, description="Seconds of video kept before an event")
    post_s: float = Field(10, ge=0, le=60, description="Seconds recorded after an event")


class ReconnectConfig(Strict):
    first_s: float = Field(1.0, gt=0, le=60, description="First wait before reconnecting")
    max_s: float = Field(
        30.0, gt=0, le=600, description="Longest wait between reconnects (doubling, with jitter)"
    )
    auth_max_s: float = Field(
        300.0, gt=0, le=3600,
        description="Longest wait between tries while the camera refuses the credentials "
        "(a locked account must not be hammered)",
    )


class CameraConfig(Strict):
    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
        description="Camera id: its device id, topics dev/{id}/...",
    )
    url: str | None = Field(
        None,
        description="rtsp:// or rtsps:// URL, without credentials (required in site.yaml; "
        "not needed to analyse a file)",
    )
    username: str | None = Field(None, description="RTSP user name")
    password_file: Path | None = Field(None, description="File whose content is the password")
    password_env: str | None = Field(
        None, description="Environment variable that holds the password"
    )
    location: str | None = Field(None, description="Location path where the camera looks")
    analytics: list[Analytic] = Field(
        default_factory=list, description="Analytics beyond motion and tamper: face, throw"
    )
    detect: DetectConfig = Field(default_factory=DetectConfig, description="Analysis rate, size")
    stall_timeout_s: float = Field(
        20, ge=2, le=600,
        description="No frame for this long: stream_lost (the camera's own, not a global one)",
    )
    gap_min_s: float = Field(
        2, gt=0, le=600, description="Gaps in frames at least this long go into the gap ledger"
    )
    telemetry_s: float = Field(
        60, ge=1, le=3600,
        description="Seconds between the worker's telemetry reports (fps, analysed fps, bit rate)",
    )
    privacy_masks: list[list[Point]] = Field(
        default_factory=list,
        description="Polygons (full-frame pixels) blacked out before analysis and storage",
    )
    record: RecordConfig = Field(default_factory=RecordConfig, description="Evidence clips")
    reconnect: ReconnectConfig = Field(
        default_factory=ReconnectConfig, description="Back-off between reconnects"
    )
    max_width: int = Field(
        1920, ge=160, le=7680,
        description="A stream wider than this is refused with a clear error (4K where 720p "
        "was expected would cost the gateway a core)",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion gating")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Tamper detection")
    face: FaceConfig = Field(
        default_factory=FaceConfig, description="Face watchlist analytics (`analytics: [face]`)"
    )
    facade: FacadeConfig | None = Field(
        None, description="Façade calibration of a `throw` camera: corners, floors, columns "
        "(without it, thrown objects are detected with the floor unknown)",
    )
    throw: ThrowConfig = Field(default_factory=ThrowConfig, description="Thrown-object tuning")

    @field_validator("url")
    @classmethod
    def _rtsp(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("rtsp", "rtsps"):
            raise ValueError(f"must be an rtsp:// or rtsps:// URL, got scheme {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("has no host")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials: use username and password_file")
        return url

    @field_validator("privacy_masks")
    @classmethod
    def _polygons(cls, masks: list[list[Point]]) -> list[list[Point]]:
        for i, polygon in enumerate(masks):
            if len(polygon) < 3:
                raise ValueError(f"mask {i} has {len(polygon)} points; a polygon needs 3")
        return masks

    @model_validator(mode="after")
    def _one_secret(self) -> CameraConfig:
        if self.password_file and self.password_env:
            raise ValueError("give password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        if self.facade is not None:
            for i, (x, _) in enumerate(self.facade.corners):
                if x > self.max_width:
                    raise ValueError(f"facade.corners: corner {i + 1} x={x} is outside any "
                                     f"frame this camera may send (max_width {self.max_width})")
        return self

    def password(self) -> str | None:
        """The secret, read when connecting, so it never sits in a config dump or a log."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"camera {self.id}: environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file:
            try:
                return self.password_file.read_text().strip()
            except OSError as err:
                raise ConfigError(
                    f"camera {self.id}: password_file {self.password_file}: {err.strerror}"
                ) from err
        return None

    def source_url(self) -> str:
        """The URL to open, with the credentials in it. Never log it: see `redacted_url`."""
        if self.url is None:
            raise ConfigError(f"camera {self.id}: no url")
        if not self.username:
            return self.url
        parts = urlsplit(self.url)
        secret = self.password()
        user = quote(self.username, safe="")
        auth = f"{user}:{quote(secret, safe='')}" if secret is not None else user
        netloc = f"{auth}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def redacted_url(self) -> str:
        url = self.url or "(no url)"
        return url if not self.username else url.replace("://", f"://{self.username}:***@", 1)

    def redact(self, text: str) -> str:
        """`text` (an FFmpeg error, say) with the password and credentialled URL removed."""
        try:
            secret = self.password()
        except ConfigError:
            secret = None
        if secret:
            text = text.replace(quote(secret, safe=""), "***").replace(secret, "***")
        return text


def camera_from_file(path: Path) -> CameraConfig:
    """One `cameras:` entry in a file of its own (for `shouwang video analyze`)."""
    from shouwang.config import load_yaml

    return load_yaml(path, CameraConfig)
