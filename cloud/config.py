"""The cloud aggregator's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from cloud.access.config import AccessConfig
from cloud.escalation.policy import EscalationConfig
from cloud.evidence import EvidenceConfig
from cloud.notify.config import NotifyConfig
from cloud.telemetry.sql import SqlTelemetryConfig
from cloud.telemetry.victoria import VictoriaMetricsConfig
from cloud.watchdog import WatchdogConfig
from cloud.watchlist_retention import RetentionConfig
from cloud.watchlist_store import WatchlistsConfig
from shouwang.config import BrokerConfig, ConfigError, HttpConfig, Strict

TelemetryConfig = Annotated[
    SqlTelemetryConfig | VictoriaMetricsConfig, Field(discriminator="backend")
]


Role = Literal["ingest", "alert_downlink", "watchlist_downlink"]


class BrokerAccount(Strict):
    """One worker role's credentials on the cloud broker; host, port and TLS are `broker`'s."""

    username: str = Field(description="The role's account, e.g. shouwang-ingest")
    password_file: Path | None = Field(
        None, description="File whose content is the password (`shouwang cloud provision` "
        "writes it: {dir}/{username}.password)")
    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the password")

    @model_validator(mode="after")
    def _one_password(self) -> BrokerAccount:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError(f"account {self.username}: give password_file or password_env")
        return self


class BrokerAccounts(Strict):
    """Each cloud worker role's own broker account, so that each may do only its job on the
    broker (docs/provisioning.md). A role left out uses the `broker` section's account."""

    ingest: BrokerAccount | None = Field(
        None, description="Reads every site's uplink (`site/+/up/#`) and confirms what it "
        "stored (`site/+/down/ack`)")
    alert_downlink: BrokerAccount | None = Field(
        None, description="Tells gateways of changes to their alerts (`site/+/down/alert`); "
        "publishes only")
    watchlist_downlink: BrokerAccount | None = Field(
        None, description="Sends gateways their signed watchlists (`site/+/down/watchlist`); "
        "publishes only")


Stream = Literal["alerts", "data"]
STREAMS: tuple[Stream, ...] = ("alerts", "data")  # the keys of shouwang.protocol.CLOUD_STREAMS


class CloudConfig(Strict):
    broker: BrokerConfig = Field(
        description="The cloud broker that site gateways publish to, and the account of every "
        "worker role that has none of its own in `broker_accounts`")
    broker_accounts: BrokerAccounts = Field(
        default_factory=BrokerAccounts,
        description="Each worker role's own account on the cloud broker (`ingest`, "
        "`alert_downlink`, `watchlist_downlink`), as `shouwang cloud provision` prints them",
    )
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
    streams: list[Stream] = Field(
        default_factory=lambda: list(STREAMS),
        min_length=1,
        description="Which ingest streams this worker takes: `alerts` (every worker gets every "
        "alert; stored once) and/or `data` (telemetry, events, health, evidence, shared among "
        "workers). Run alerts in a process without `data` so an SOS never waits behind a "
        "telemetry flood for CPU",
    )
    api: bool = Field(True, description="Serve the HTTP API and dashboard in this process")
    evidence: EvidenceConfig = Field(
        default_factory=EvidenceConfig, description="Evidence uploads from gateways"
    )
    notify: NotifyConfig = Field(
        default_factory=NotifyConfig,
        description="Notifiers: Web Push, Apprise URLs, rate limits, digests, retries",
    )
    feed_poll_s: float = Field(
        0.5, gt=0, le=60,
        description="How often an API worker reads changes other workers stored, for its "
        "WebSocket clients (its own changes go out at once)",
    )
    access: AccessConfig = Field(
        default_factory=AccessConfig, description="Logins, sessions and login throttling"
    )
    escalation: EscalationConfig = Field(
        default_factory=EscalationConfig,
        description="Escalation policies file and the timer loop every worker runs",
    )
    telemetry: TelemetryConfig = Field(
        default_factory=SqlTelemetryConfig,
        description="Where readings go: `backend: sql` (default, the database above) or "
        "`backend: victoriametrics` with `url`",
    )
    require_registered_sites: bool = Field(
        True,
        description="Refuse envelopes from sites not imported (`unknown_site`) and alerts and "
        "events from devices not imported to their site (`unknown_device`); the gateway keeps "
        "them and sends them again. An alert's resident and location are always the "
        "registry's for an imported device. false, for a lab only: a site is registered by "
        "its first gateway report, and an alert of a device not imported keeps what its "
        "gateway says of its place and person",
    )
    watchdog: WatchdogConfig = Field(
        default_factory=WatchdogConfig,
        description="The gateway watchdog: one gateway_offline alert for a silent site "
        "(`gateway_silence_s`, `will_grace_s`, `poll_s`)",
    )
    watchlist_retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Deletes a watchlist match's evidence at its list's retention, each "
        "deletion audited (`enabled`, `poll_s`, `unknown_list_days`)",
    )

    watchlists: WatchlistsConfig | None = Field(
        None,
        description="Gate face watchlists (docs/face.md): the key that seals descriptors and "
        "reference photos at rest and the key that signs the lists sent to gateways; both "
        "files are made on the first start. Without it the watchlist API answers 503 and no "
        "watchlist goes to any gateway",
    )
    metrics_token_file: Path | None = Field(
        None,
        description="File holding the bearer token Prometheus sends for `/metrics`; without "
        "it, `/metrics` answers only clients on this host that came through no proxy",
    )

    data_worker_nice: int = Field(
        10, ge=0, le=19,
        description="How much a worker that only ingests data (`streams: [data]`, `api: false`) "
        "lowers its CPU priority (nice) at start, so that in a telemetry flood the alert "
        "workers and the database run first; 0 keeps it",
    )

    @property
    def alert_duties(self) -> bool:
        """Escalation, the watchdog and notification retries run in every worker but one that
        ingests data and not alerts: busy with telemetry, it would fire them late."""
        return not (self.ingest and "alerts" not in self.streams)

    @property
    def nice(self) -> int:
        """The CPU priority decrement `shouwang cloud run` applies at start."""
        data_only = not self.alert_duties and not self.api
        return self.data_worker_nice if data_only else 0

    def broker_for(self, role: Role) -> BrokerConfig:
        """The broker as `role` connects to it: its own account, else the `broker` one."""
        account: BrokerAccount | None = getattr(self.broker_accounts, role)
        if account is None:
            return self.broker
        return self.broker.model_copy(update={
            "username": account.username, "password_file": account.password_file,
            "password_env": account.password_env})

    def metrics_token(self) -> str | None:
        """The `/metrics` token, read at start so a missing file stops start-up."""
        if self.metrics_token_file is None:
            return None
        try:
            token = self.metrics_token_file.read_text().strip()
        except OSError as err:
            raise ConfigError(f"metrics_token_file {self.metrics_token_file}: {err}") from err
        if len(token) < 16:
            raise ConfigError(
                f"metrics_token_file {self.metrics_token_file}: the token needs at least 16 "
                "characters"
            )
        return token

    @field_validator("streams")
    @classmethod
    def _each_stream_once(cls, streams: list[str]) -> list[str]:
        if len(set(streams)) != len(streams):
            raise ValueError(f"a stream is named twice: {streams}")
        return streams
