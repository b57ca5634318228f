"""Gate face watchlists in the cloud: the people enrolled (sealed) and the change counter.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('watchlist_people',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('list', sa.String(length=64), nullable=False),
    sa.Column('person', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=512), nullable=False),
    sa.Column('consent', sa.String(length=128), nullable=False),
    sa.Column('entered_by', sa.String(length=128), nullable=False),
    sa.Column('entered_ms', sa.BigInteger(), nullable=False),
    sa.Column('until_ms', sa.BigInteger(), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('photo_hashes', sa.JSON(), nullable=False),
    sa.Column('photo_type', sa.String(length=32), nullable=False),
    sa.Column('embeddings', sa.LargeBinary(), nullable=False),
    sa.Column('photo', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('list', 'person', name='uq_watchlist_people_list_person')
    )
    op.create_table('watchlist_changes',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('list', sa.String(length=64), nullable=False),
    sa.Column('person', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=512), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )


def downgrade() -> None:
    op.drop_table('watchlist_changes')
    op.drop_table('watchlist_people')
