"""The edge daemon's configuration (one YAML file per site gateway)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.adapters.cjt188_client import Cjt188Link
from edge.adapters.modbus import ModbusLink
from edge.evidence import EvidenceConfig
from edge.fallback import FallbackConfig
from edge.rules.config import RulesSettings
from edge.rules.residents import Resident
from edge.video.config import CameraConfig
from shouwang.config import BrokerConfig, HttpConfig, Strict


class DeviceBinding(Strict):
    id: str = Field(description="Device id, as in its topics dev/{id}/...")
    profile: str = Field(description="Device profile (file name in device_profiles/)")
    resident: str | None = Field(None, description="Resident id the device is bound to")
    location: str | None = Field(
        None,
        description="Location path: district/street/community/grid/building/unit/floor/household",
    )
    modbus: ModbusLink | None = Field(
        None, description="Poll this device over Modbus (TCP or RTU over TCP) instead of MQTT"
    )
    cjt188: Cjt188Link | None = Field(
        None,
        description="Poll this device as a CJ/T 188 water or gas meter behind a transparent "
        "serial server, instead of MQTT",
    )

    @model_validator(mode="after")
    def _one_link(self) -> DeviceBinding:
        links = [name for name in ("modbus", "cjt188") if getattr(self, name) is not None]
        if len(links) > 1:
            raise ValueError(
                f"device {self.id!r}: {' and '.join(links)} are both set; "
                "a device is polled over one link"
            )
        return self


class UplinkConfig(Strict):
    batch: int = Field(200, ge=1, le=5000, description="Outbox rows published per round")
    publish_timeout_s: float = Field(10.0, gt=0, description="Wait this long for a PUBACK")
    retry_delay_s: float = Field(1.0, gt=0, description="Pause after a failed round")
    rate_msgs_s: float = Field(
        200.0,
        gt=0,
        description="Non-life-safety messages per second (a telemetry batch is one); "
        "life-safety alerts bypass this limit",
    )
    burst: int = Field(400, ge=1, description="Token bucket size for rate_msgs_s")
    confirm: Literal["cloud", "broker"] = Field(
        "cloud",
        description="When a row leaves the outbox: `cloud` once the cloud confirms it stored "
        "it (site/{site}/down/ack); `broker` on the broker's PUBACK, for a cloud that does not "
        "confirm (a broker restart can then lose what it had acknowledged)",
    )
    ack_timeout_s: float = Field(
        30.0, gt=0, description="Publish again what the cloud has not confirmed after this long"
    )
    window: int = Field(
        500,
        ge=1,
        le=20000,
        description="Messages published and awaiting the cloud's confirmation at most (stay "
        "well under paho's ~65k in-flight limit and the broker's queue for the cloud)",
    )


class OutboxConfig(Strict):
    life_safety_mib: float = Field(64, gt=0, description="Quota; over it, lower classes are shed")
    security_mib: float = Field(32, gt=0, description="Quota for security events")
    health_mib: float = Field(16, gt=0, description="Quota for device health")
    telemetry_mib: float = Field(256, gt=0, description="Quota; the oldest is dropped first")
    bulk_mib: float = Field(512, gt=0, description="Quota for bulk media")
    consume_batch: int = Field(
        500, ge=1, le=5000, description="Device messages stored per transaction at most"
    )
    reserve_mib: float = Field(
        4,
        ge=0,
        description="Disk space held back in `data_dir/outbox.reserve` for the day the disk "
        "is full: released then, so life-safety rows and the rule state can still be written, "
        "and made again when there is room (docs/disk.md). 0 holds nothing back",
    )


class EdgeConfig(Strict):
    site: str = Field(description="Site (gateway) id, as in the cloud topics site/{site}/...")
    edge_broker: BrokerConfig = Field(description="The gateway's own broker that devices use")
    cloud_broker: BrokerConfig = Field(description="The cloud broker the uplink publishes to")
    data_dir: Path = Field(Path("var/edge"), description="Where the outbox database lives")
    http: HttpConfig = Field(
        default_factory=lambda: HttpConfig(port=9101), description="Metrics and health endpoint"
    )
    uplink: UplinkConfig = Field(default_factory=UplinkConfig, description="Uplink tuning")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Outbox quotas")
    fallback: FallbackConfig = Field(
        default_factory=FallbackConfig, description="Local alarm when the uplink stays down"
    )
    evidence: EvidenceConfig | None = Field(
        None,
        description="Where evidence (snapshots, clips) is uploaded; without it, evidence waits "
        "in the outbox's bulk class",
    )
    max_payload_bytes: int = Field(64 * 1024, ge=256, description="Larger payloads are rejected")
    cloud_watchlist_key: Path | None = Field(
        None,
        description="The cloud's public watchlist key (PEM, Ed25519; `watchlist-signing.pub.pem` "
        "beside the cloud's `watchlists.signing_key_file`): watchlists from the cloud "
        "(`site/{site}/down/watchlist`) are applied only when signed with it; without it none "
        "is applied. While the cloud's key is rotated the file holds the old and the new PEM "
        "key, and either is taken (docs/face.md)",
    )
    devices: list[DeviceBinding] = Field(default_factory=list, description="Known devices")
    cameras: list[CameraConfig] = Field(
        default_factory=list,
        description="RTSP cameras (docs/video.md): each is also a device of profile `camera`",
    )
    residents: list[Resident] = Field(
        default_factory=list,
        description="Residents the devices are bound to: ids, tags, care plan, geofence, routine",
    )
    rules: RulesSettings = Field(
        default_factory=RulesSettings, description="Rule engine: site rule file and time zone"
    )

    @model_validator(mode="after")
    def _unique_devices(self) -> EdgeConfig:
        seen: set[str] = set()
        for i, d in enumerate(self.devices):
            if d.id in seen:
                raise ValueError(f"devices[{i}].id: duplicate device id {d.id!r}")
            seen.add(d.id)
        # A camera is a device of the `camera` profile: its worker's messages take the road
        # every device's take (pipeline, rules, outbox), and it shows with the devices.
        by_id = {d.id: d for d in self.devices}
        for i, c in enumerate(self.cameras):
            if c.url is None:
                raise ValueError(f"cameras[{i}].url: required for a camera the gateway watches")
            known = by_id.get(c.id)
            if known is None:
                self.devices.append(DeviceBinding(id=c.id, profile="camera", location=c.location))
            elif known.profile != "camera":
                raise ValueError(
                    f"cameras[{i}].id: {c.id!r} is also a device of profile {known.profile!r}"
                )
        people: set[str] = set()
        for i, r in enumerate(self.residents):
            if r.id in people:
                raise ValueError(f"residents[{i}].id: duplicate resident id {r.id!r}")
            people.add(r.id)
        return self
