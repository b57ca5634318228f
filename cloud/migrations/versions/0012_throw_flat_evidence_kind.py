"""高空抛物: the flat confirmed after investigation, kept on the alert; what each piece of
evidence is (snapshot, marked snapshot, launch area, clip, marked clip, face crop).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirmed_flat', sa.JSON(), nullable=True))
    with op.batch_alter_table('evidence', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('evidence', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('confirmed_flat')
