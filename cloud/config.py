"""The cloud aggregator's configuration."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cloud.telemetry.sql import SqlTelemetryConfig
from cloud.telemetry.victoria import VictoriaMetricsConfig
from shouwang.config import BrokerConfig, HttpConfig, Strict

TelemetryConfig = Annotated[
    SqlTelemetryConfig | VictoriaMetricsConfig, Field(discriminator="backend")
]


class CloudConfig(Strict):
    broker: BrokerConfig = Field(description="The cloud broker that site gateways publish to")
    database_url: str = Field(
        "sqlite+aiosqlite:///var/cloud/shouwang.sqlite",
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    http: HttpConfig = Field(default_factory=HttpConfig, description="API and dashboard server")
    worker_id: str = Field(
        "cloud-1",
        description="Stable name of this ingest worker; its broker session survives restarts",
    )
    max_payload_bytes: int = Field(256 * 1024, ge=256, description="Larger payloads are rejected")
    ingest: bool = Field(True, description="Run the MQTT ingest worker in this process")
    api: bool = Field(True, description="Serve the HTTP API and dashboard in this process")
    telemetry: TelemetryConfig = Field(
        default_factory=SqlTelemetryConfig,
        description="Where readings go: `backend: sql` (default, the database above) or "
        "`backend: victoriametrics` with `url`",
    )
    require_registered_sites: bool = Field(
        False,
        description="Reject envelopes from sites not in the sites table (`unknown_site`); "
        "when false, a site is registered by its first gateway report",
    )
