"""Every cloud SQL table, on one shared `metadata`; migrations in `cloud/migrations/` build it.

A table added here without a migration fails `tests/integration/test_migrations.py`.
`from cloud.store import metadata` keeps working (re-exported).
"""

from __future__ import annotations

import importlib

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

# The eight levels of a location path, outermost first (区/街道/社区/网格/楼栋/单元/楼层/户).
LOCATION_LEVELS = (
    "district", "street", "community", "grid", "building", "unit", "floor", "household"
)
# Residents' tags: the vocabulary rules and dashboards rely on; anything else is a typo.
RESIDENT_TAGS = ("living_alone", "elderly", "dementia", "disabled", "child")
PATH_LEN = 512

# --- revision 0001: what the cloud stored before migrations ------------------------------

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("device", String(64), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("dedup_key", String(200), nullable=False),
    Column("resident", String(64)),
    Column("location", String(256)),
    Column("life_safety", Boolean, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_changed_ms", BigInteger, nullable=False),
    Column("body", JSON, nullable=False),
    # Revision 0005: one life per alert, shared with the gateway and every dashboard.
    # `version` counts every change (a state, an escalation, a repeat, a family member's
    # "seen"): dashboards and gateways key their copies by it.
    Column("version", Integer, nullable=False, server_default="1"),
    Column("repeats", Integer, nullable=False, server_default="0"),  # folded repeats
    Column("last_ms", BigInteger),  # when the latest repeat happened
    Column("ack_by", String(128)),  # the responder who acknowledged (user name), and role
    Column("ack_role", String(16)),
    Column("seen_by", String(128)),  # the latest family member who said "seen", and when
    Column("seen_ms", BigInteger),
    # Revision 0012: a thrown object's flat as found by whoever investigated (floor, column,
    # note, by, ts); the latest stands, every one is in the timeline and the audit log.
    Column("confirmed_flat", JSON),
    Index("alerts_state_ts", "state", "ts"),
    Index("alerts_ts", "ts"),
)

alert_transitions = Table(
    "alert_transitions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(64), nullable=False, index=True),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("note", Text),
    # Revision 0013: the note is shared with the resident's family (a worker's choice); the
    # family reads no other note (docs/access.md).
    Column("shared", Boolean, nullable=False, server_default=false()),
)

drop_reports = Table(
    "drop_reports",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site", String(64), nullable=False, index=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("body", JSON, nullable=False),
)

readings = Table(
    "readings",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("vals", JSON, nullable=False),
    Index("readings_device_ts", "site", "device", "ts"),
)

# --- revision 0002: places, people, devices, events --------------------------------------

sites = Table(
    "sites",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128)),
    Column("location", String(PATH_LEN)),  # path prefix the site serves, if known
    Column("registered_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger),  # ts of the gateway's latest own report
    Column("last_health", JSON),  # body of that report
    # The cloud's own clock (edge clocks may be wrong): when it last heard a gateway report,
    # and when a gateway_offline notice (MQTT will, planned stop) arrived, with its id so a
    # redelivered will does not move the time (cloud/watchdog.py).
    Column("heard_ms", BigInteger),
    Column("offline_ms", BigInteger),
    Column("offline_id", String(64)),
    Column("offline_reason", String(32)),
)

locations = Table(
    "locations",
    metadata,
    Column("path", String(PATH_LEN), primary_key=True),
    Column("parent", String(PATH_LEN), ForeignKey("locations.path"), index=True),
    Column("level", Integer, nullable=False),  # 1 = district … 8 = household
    Column("name", String(128), nullable=False),  # the last path segment
    Column("label", String(128)),  # display name, e.g. 3号楼
    # Revision 0013: the number a family calls for this place (a community's office, a
    # building's property desk); a household's is its nearest ancestor's with one.
    Column("phone", String(32)),
)

residents = Table(
    "residents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),  # personal data: never logged
    Column("location", String(PATH_LEN), ForeignKey("locations.path"), index=True),
    Column("tags", JSON, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    # Revision 0008: what a responder needs to reach and help the person (personal data,
    # never logged; who sees which is in docs/access.md).
    Column("birth_year", Integer),
    Column("phone", String(32)),
    Column("contacts", JSON, nullable=False, server_default="[]"),  # [{name, relation, phone}]
)

resident_guardians = Table(
    "resident_guardians",
    metadata,
    Column("resident_id", String(64), ForeignKey("residents.id"), nullable=False),
    Column("contact_id", String(64), nullable=False),  # a user or contact id
    Column("relation", String(32)),
    Column("priority", Integer, nullable=False),  # 1 is told first
    PrimaryKeyConstraint("resident_id", "contact_id"),
)

consents = Table(
    "consents",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("resident_id", String(64), ForeignKey("residents.id"), nullable=False, index=True),
    Column("purpose", String(64), nullable=False),
    Column("granted_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger),
    Column("recorded_by", String(128), nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("site", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("profile", String(64)),  # None until imported: known from health reports only
    Column("model", String(64)),
    Column("firmware", String(64)),
    Column("resident", String(64), ForeignKey("residents.id")),
    Column("location", String(PATH_LEN), ForeignKey("locations.path")),
    # Liveness per dimension (docs/liveness.md) and when the gateway saw it change.
    Column("transport", String(16)),
    Column("transport_ms", BigInteger),
    Column("data", String(16)),
    Column("data_ms", BigInteger),
    Column("health", String(16)),
    Column("health_ms", BigInteger),
    Column("battery", String(16)),
    Column("battery_ms", BigInteger),
    Column("last_seen_ms", BigInteger),  # ts of the newest reading stored
    # Revision 0008: when the cloud stored the latest liveness change (its own clock): what
    # the change feed follows to keep open Devices tabs live.
    Column("changed_ms", BigInteger, index=True),
    PrimaryKeyConstraint("site", "id"),
)

events = Table(
    "events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("name", String(64)),
    Column("ts", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("body", JSON, nullable=False),
    Index("events_site_ts", "site", "ts"),
)


# --- revision 0005: messages a bug kept the cloud from handling ---------------------------

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(64), primary_key=True),  # the envelope id, or a hash of the payload
    Column("site", String(64)),
    Column("topic", String(256), nullable=False),
    Column("payload", Text, nullable=False),  # as received (undecodable bytes replaced)
    Column("error", Text, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("alert_id", String(64)),  # the `processing_failed` alert that tells a person
)


# Subsystems keep their tables beside their code, on this same metadata.
TABLE_MODULES = (
    "cloud.access.tables", "cloud.notify.tables", "cloud.evidence", "cloud.evidence_key",
    "cloud.watchlist_store",
)


def complete_metadata() -> MetaData:
    """`metadata` with every subsystem's tables loaded: what migrations must produce."""
    for name in TABLE_MODULES:
        importlib.import_module(name)
    return metadata
