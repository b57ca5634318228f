"""Notes a worker shares with the resident's family (a flag on the timeline line); the number
to call for a place (a community's office, a building's property desk), nearest ancestor wins.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alert_transitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shared', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    with op.batch_alter_table('locations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phone', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('locations', schema=None) as batch_op:
        batch_op.drop_column('phone')
    with op.batch_alter_table('alert_transitions', schema=None) as batch_op:
        batch_op.drop_column('shared')
