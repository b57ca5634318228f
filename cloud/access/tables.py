"""Every table of the people-and-alerts half of the cloud, in one module for one migration.

Access (users, scopes, sessions, audit log) and escalation (plans, stages, notifications,
assignments) live here together so a single Alembic revision can create them all.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from cloud.schema import alerts, metadata

# A family's scope is a few residents: without this, listing their alerts scans the table
# (bench/api_scope.py over 100k alerts: p50 48 ms without it, 6 ms with it).
Index("alerts_resident_ts", alerts.c.resident, alerts.c.ts)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("display_name", String(128), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
)

# police and worker: location prefixes; family: resident ids. One row per scope entry.
user_scopes = Table(
    "user_scopes",
    metadata,
    Column("user_id", Integer, nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # "location" | "resident"
    Column("value", String(256), nullable=False),
    UniqueConstraint("user_id", "kind", "value", name="user_scopes_unique"),
)

# Only a hash of the token is stored: a copy of the database does not log anyone in.
sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, nullable=False, index=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(256)),
    Column("remote", String(64)),
    Column("detail", JSON),
    # Login throttling counts recent failures per user name and per client address.
    Index("audit_action_target_ts", "action", "target", "ts"),
    Index("audit_action_remote_ts", "action", "remote", "ts"),
)

# A user name whose password is being checked right now. A login inserts the row before it
# checks and deletes it after, so parallel guesses for one name take turns across every API
# worker and each sees the failures before it; a row left by a crashed worker expires.
login_claims = Table(
    "login_claims",
    metadata,
    Column("username", String(256), primary_key=True),
    Column("until_ms", BigInteger, nullable=False),
)

# An alert is planned once (even with no policy), so the planner's sweep skips it afterwards.
escalation_plans = Table(
    "escalation_plans",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("planned_ms", BigInteger, nullable=False),
)

escalation_stages = Table(
    "escalation_stages",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("stage", String(64), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("targets", JSON, nullable=False),  # roles, e.g. ["family"]
    Column("due_ms", BigInteger, nullable=False),
    Column("claimed_by", String(64)),
    Column("claimed_ms", BigInteger),
    Column("done_ms", BigInteger),
    Column("cancelled_ms", BigInteger),
    Index("escalation_due", "done_ms", "cancelled_ms", "due_ms"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("stage", String(64), primary_key=True),
    Column("user_id", Integer, primary_key=True),
    Column("worker", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),  # "pending" | "sent" | "failed"
    Column("error", Text),
)

# Who an alert was dispatched to (the transition row says when and by whom).
assignments = Table(
    "assignments",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(64), nullable=False, index=True),
    Column("user_id", Integer, nullable=False),
    Column("ts", BigInteger, nullable=False),
)
