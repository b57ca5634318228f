"""One password check at a time per user name: the login claims table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('login_claims',
    sa.Column('username', sa.String(length=256), nullable=False),
    sa.Column('until_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('username')
    )


def downgrade() -> None:
    op.drop_table('login_claims')
