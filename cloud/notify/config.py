"""Configuration of the notifiers: channels, rate limits, digest and retries (`notify:`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from shouwang.config import Strict
from shouwang.profiles import SEVERITIES


class RateLimitConfig(Strict):
    burst: int = Field(
        5, ge=1, le=1000,
        description="Immediate notifications a recipient may get back to back (bucket size)",
    )
    per_hour: float = Field(
        30.0, gt=0,
        description="Tokens added back per hour; a non-critical alert over the limit goes "
        "into the recipient's next digest instead",
    )
    max_recipients: int = Field(
        10_000, ge=1,
        description="Buckets kept; beyond this the least recently used is forgotten "
        "(that recipient starts again with a full bucket)",
    )


class DigestConfig(Strict):
    severities: tuple[str, ...] = Field(
        ("medium", "low", "info"),
        description="Severities collected into a digest instead of sent one by one; "
        "critical and life-safety alerts never are",
    )
    window_s: float = Field(
        300.0, gt=0, description="A digest is sent this long after its first alert arrived"
    )
    max_listed: int = Field(
        20, ge=1, le=500, description="Alerts listed one by one in a digest; the rest counted"
    )
    max_pending: int = Field(
        500, ge=1,
        description="Alerts one recipient's digest holds; a full digest is sent at once",
    )

    @field_validator("severities")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for severity in value:
            if severity not in SEVERITIES:
                raise ValueError(f"{severity!r} is not one of {', '.join(SEVERITIES)}")
            if severity == "critical":
                raise ValueError("critical alerts are never digested")
        return value


class RetryConfig(Strict):
    max_attempts: int = Field(
        5, ge=1, le=50,
        description="Attempts per target for transient failures (5xx, 429, refused, timeout)",
    )
    base_s: float = Field(2.0, gt=0, description="Delay before the first retry; doubles after")
    max_s: float = Field(300.0, gt=0, description="Longest delay between two retries")


class WebPushConfig(Strict):
    enabled: bool = Field(True, description="Deliver to users' browser push subscriptions")
    subject: str = Field(
        "mailto:noc@shouwang.invalid",
        description="VAPID `sub` claim: a mailto: or https: contact for push services",
    )
    ttl_s: int = Field(
        86_400, ge=0, le=2_419_200, description="How long a push service keeps an undelivered push"
    )
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one POST to a push service")
    allow_http_endpoints: bool = Field(
        False,
        description="Accept plain-http push endpoints (only for local test push services; "
        "real ones are https)",
    )
    endpoint_hosts: tuple[str, ...] = Field(
        ("fcm.googleapis.com", ".push.services.mozilla.com", ".notify.windows.com",
         ".push.apple.com"),
        description="Push services a subscription may point at (a leading dot allows "
        "subdomains), so a user cannot make the cloud POST into its own network; [] allows "
        "any host",
    )

    @field_validator("subject")
    @classmethod
    def _contact(cls, value: str) -> str:
        if not value.startswith(("mailto:", "https://")):
            raise ValueError("must start with mailto: or https://")
        return value


class AppriseConfig(Strict):
    urls_file: Path | None = Field(
        None,
        description="YAML file mapping recipients (`user:<id>`, `role:<name>`) to lists of "
        "Apprise URLs; they hold tokens, so never in this YAML",
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one Apprise delivery")
    workers: int = Field(
        4, ge=1, le=64, description="Threads that run Apprise (it blocks) at most at once"
    )


class NotifyConfig(Strict):
    enabled: bool = Field(True, description="Run the notifiers in this process")
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="Base URL of the dashboard, for the links in notifications",
    )
    tick_s: float = Field(
        1.0, gt=0, le=60, description="How often due digests and retries are looked at"
    )
    claim_timeout_s: float = Field(
        600.0, gt=0,
        description="A digest or retry a worker took and did not finish within this long "
        "(it died mid-send) is taken up again by any worker",
    )
    rate_limit: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="Per-recipient limits on immediate sends"
    )
    digest: DigestConfig = Field(
        default_factory=DigestConfig, description="Non-critical alerts collected per recipient"
    )
    retry: RetryConfig = Field(
        default_factory=RetryConfig, description="Retries with backoff for transient failures"
    )
    webpush: WebPushConfig = Field(default_factory=WebPushConfig, description="Web Push")
    apprise: AppriseConfig = Field(
        default_factory=AppriseConfig, description="Apprise URLs: webhooks, bots, ntfy, e-mail"
    )
