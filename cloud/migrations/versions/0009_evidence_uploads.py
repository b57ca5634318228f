"""Which site uploaded which evidence blob: a site may name only what it uploaded (issue 14).

Blobs uploaded before this revision have no row: their gateway's next evidence envelope is
refused as `evidence_missing` (not confirmed), so it uploads the blob again, which records it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('evidence_uploads',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('uploaded_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site', 'sha256')
    )


def downgrade() -> None:
    op.drop_table('evidence_uploads')
