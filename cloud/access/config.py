"""Configuration of logins and sessions (`access:` in cloud.yaml)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from shouwang.config import Strict


class AccessConfig(Strict):
    session_ttl_s: int = Field(
        12 * 3600, ge=60, le=30 * 24 * 3600,
        description="A session (cookie or bearer token) expires this long after login",
    )
    cookie_secure: bool = Field(
        False, description="Mark the session cookie Secure (set true behind HTTPS)"
    )
    login_window_s: int = Field(
        300, ge=10, le=86400, description="Failed logins are counted over this window"
    )
    max_failures_per_user: int = Field(
        10, ge=1, le=1000,
        description="Failed logins for one user name within the window before logins for it "
        "are refused (429) until the window has passed",
    )
    max_failures_per_address: int = Field(
        30, ge=1, le=10000,
        description="Failed logins from one client address within the window before logins "
        "from it are refused (429)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) besides the server's own from which a "
        "browser may change state with the session cookie or open the WebSocket; needed "
        "when a reverse proxy does not pass the browser's Host header through "
        "(docs/security.md)",
    )
    websocket_recheck_s: float = Field(
        30, gt=0, le=3600,
        description="An open WebSocket re-checks its session this often and closes (code "
        "4401) once the session has ended",
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip(
                "/"
            ) or parts.query:
                raise ValueError(f"{origin!r} is not an origin like https://host[:port]")
        return origins
