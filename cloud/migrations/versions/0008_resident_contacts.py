"""Residents' birth year, phone and emergency contacts: what a responder needs to reach them;
devices' `changed_ms`, what the change feed follows to keep Devices tabs live.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-05 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('residents') as batch:
        batch.add_column(sa.Column('birth_year', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('phone', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('contacts', sa.JSON(), server_default='[]', nullable=False))
    with op.batch_alter_table('devices') as batch:
        batch.add_column(sa.Column('changed_ms', sa.BigInteger(), nullable=True))
        batch.create_index(batch.f('ix_devices_changed_ms'), ['changed_ms'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('devices') as batch:
        batch.drop_index(batch.f('ix_devices_changed_ms'))
        batch.drop_column('changed_ms')
    with op.batch_alter_table('residents') as batch:
        batch.drop_column('contacts')
        batch.drop_column('phone')
        batch.drop_column('birth_year')
