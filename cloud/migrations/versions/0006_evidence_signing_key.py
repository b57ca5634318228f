"""The key that signs evidence packages (one Ed25519 key per purpose, made on first start).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signing_keys',
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('private_pem', sa.Text(), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('purpose')
    )


def downgrade() -> None:
    op.drop_table('signing_keys')
