"""Sites, locations, residents (guardians, consents), devices and events.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("events_site_ts", "events", ["site", "ts"], unique=False)
    op.create_table(
        "locations",
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("parent", sa.String(length=512), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent"],
            ["locations.path"],
        ),
        sa.PrimaryKeyConstraint("path"),
    )
    op.create_index(op.f("ix_locations_parent"), "locations", ["parent"], unique=False)
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("location", sa.String(length=512), nullable=True),
        sa.Column("registered_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_health", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "residents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("location", sa.String(length=512), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["location"],
            ["locations.path"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_residents_location"), "residents", ["location"], unique=False)
    op.create_table(
        "consents",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resident_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("granted_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(op.f("ix_consents_resident_id"), "consents", ["resident_id"], unique=False)
    op.create_table(
        "devices",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=64), nullable=True),
        sa.Column("firmware", sa.String(length=64), nullable=True),
        sa.Column("resident", sa.String(length=64), nullable=True),
        sa.Column("location", sa.String(length=512), nullable=True),
        sa.Column("transport", sa.String(length=16), nullable=True),
        sa.Column("transport_ms", sa.BigInteger(), nullable=True),
        sa.Column("data", sa.String(length=16), nullable=True),
        sa.Column("data_ms", sa.BigInteger(), nullable=True),
        sa.Column("health", sa.String(length=16), nullable=True),
        sa.Column("health_ms", sa.BigInteger(), nullable=True),
        sa.Column("battery", sa.String(length=16), nullable=True),
        sa.Column("battery_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["location"],
            ["locations.path"],
        ),
        sa.ForeignKeyConstraint(
            ["resident"],
            ["residents.id"],
        ),
        sa.PrimaryKeyConstraint("site", "id"),
    )
    op.create_table(
        "resident_guardians",
        sa.Column("resident_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("relation", sa.String(length=32), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
        ),
        sa.PrimaryKeyConstraint("resident_id", "contact_id"),
    )


def downgrade() -> None:
    op.drop_table("resident_guardians")
    op.drop_table("devices")
    op.drop_index(op.f("ix_consents_resident_id"), table_name="consents")
    op.drop_table("consents")
    op.drop_index(op.f("ix_residents_location"), table_name="residents")
    op.drop_table("residents")
    op.drop_table("sites")
    op.drop_index(op.f("ix_locations_parent"), table_name="locations")
    op.drop_table("locations")
    op.drop_index("events_site_ts", table_name="events")
    op.drop_table("events")
