"""Configuration of logins and sessions (`access:` in cloud.yaml)."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from shouwang.config import Strict


class AccessConfig(Strict):
    session_ttl_s: int = Field(
        12 * 3600, ge=60, le=30 * 24 * 3600,
        description="A session (cookie or bearer token) expires this long after login",
    )
    cookie_secure: bool | Literal["auto"] = Field(
        "auto",
        description="Mark the session cookie Secure. `auto`: Secure unless the browser "
        "addressed the server as plain http on loopback (http://127.0.0.1, http://localhost); "
        "a browser keeps no Secure cookie from plain http elsewhere, so set false only for a "
        "plain-http test on a private network",
    )
    login_window_s: int = Field(
        300, ge=10, le=86400, description="Failed logins are counted over this window"
    )
    max_failures_per_user: int = Field(
        5, ge=1, le=1000,
        description="Failed logins for one user name within the window before each further "
        "login for it waits a delay that doubles with every failure (`login_delay_base_s` up "
        "to `login_delay_max_s`); a delay, never a lock",
    )
    login_delay_base_s: float = Field(
        1, gt=0, le=60, description="The first delay once a user name has too many failures"
    )
    login_delay_max_s: float = Field(
        30, gt=0, le=3600,
        description="The longest a user waits after the last failed login for their name, "
        "however many there were: guessing cannot lock anyone out for longer",
    )
    known_address_days: int = Field(
        30, ge=0, le=365,
        description="A client address a user logged in from within this many days is theirs: "
        "only failures from that address delay their logins there (0: no such exemption)",
    )
    max_failures_per_address: int = Field(
        30, ge=1, le=10000,
        description="Failed logins from one client address within the window before logins "
        "from it are refused (429); the address behind `trusted_proxies` counts",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies in front of the cloud: "
        "from them the client address is taken from X-Forwarded-For (and https from "
        "X-Forwarded-Proto); from anyone else those headers are ignored",
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

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as err:
                raise ValueError(f"{proxy!r} is not an address or CIDR network") from err
        return proxies
