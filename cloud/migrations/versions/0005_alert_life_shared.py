"""One life per alert, shared: versions, repeats, who acknowledged and who saw; dead letters.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('version', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(
            sa.Column('repeats', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_ms', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('ack_by', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('ack_role', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('seen_by', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('seen_ms', sa.BigInteger(), nullable=True))
    op.create_table('dead_letters',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=True),
    sa.Column('topic', sa.String(length=256), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('received_ms', sa.BigInteger(), nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('dead_letters')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        for name in ('seen_ms', 'seen_by', 'ack_role', 'ack_by', 'last_ms', 'repeats', 'version'):
            batch_op.drop_column(name)
