"""The gateway watchdog: when the cloud last heard each site's gateway, and its offline notice.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heard_ms', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('offline_ms', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('offline_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('offline_reason', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('offline_reason')
        batch_op.drop_column('offline_id')
        batch_op.drop_column('offline_ms')
        batch_op.drop_column('heard_ms')
