"""Users, sessions, scopes and the audit log; escalation timers; notification attempts, push
subscriptions and VAPID keys; evidence; alerts by resident (for family views).

Generated with Alembic's autogenerate against revision 0002 and read through.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:56:12.546694
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('assignments',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignments_alert_id'), ['alert_id'], unique=False)

    op.create_table('audit_log',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=256), nullable=True),
    sa.Column('remote', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('audit_action_remote_ts', ['action', 'remote', 'ts'], unique=False)
        batch_op.create_index('audit_action_target_ts', ['action', 'target', 'ts'], unique=False)

    op.create_table('escalation_plans',
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('planned_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('alert_id')
    )
    op.create_table('escalation_stages',
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('targets', sa.JSON(), nullable=False),
    sa.Column('due_ms', sa.BigInteger(), nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_ms', sa.BigInteger(), nullable=True),
    sa.Column('done_ms', sa.BigInteger(), nullable=True),
    sa.Column('cancelled_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('alert_id', 'stage')
    )
    with op.batch_alter_table('escalation_stages', schema=None) as batch_op:
        batch_op.create_index('escalation_due', ['done_ms', 'cancelled_ms', 'due_ms'], unique=False)

    op.create_table('evidence',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('device', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=True),
    sa.Column('captured_ts', sa.BigInteger(), nullable=False),
    sa.Column('received_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('evidence', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evidence_alert_id'), ['alert_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evidence_sha256'), ['sha256'], unique=False)

    op.create_table('notification_attempts',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('recipient', sa.String(length=200), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('notification_attempts', schema=None) as batch_op:
        batch_op.create_index('notification_attempts_alert', ['alert_id', 'seq'], unique=False)

    op.create_table('notification_pending',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('recipient', sa.String(length=200), nullable=False),
    sa.Column('due_ms', sa.BigInteger(), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=True),
    sa.Column('target_key', sa.String(length=200), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('claim', sa.String(length=40), nullable=True),
    sa.Column('claimed_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('notification_pending', schema=None) as batch_op:
        batch_op.create_index('notification_pending_due', ['kind', 'due_ms'], unique=False)
        batch_op.create_index('notification_pending_recipient', ['kind', 'recipient'], unique=False)

    op.create_table('notifications',
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('alert_id', 'stage', 'user_id')
    )
    op.create_table('push_subscriptions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('endpoint', sa.Text(), nullable=False),
    sa.Column('p256dh', sa.String(length=128), nullable=False),
    sa.Column('auth', sa.String(length=64), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('push_subscriptions', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_push_subscriptions_user_id'), ['user_id'], unique=False
        )

    op.create_table('sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sessions_user_id'), ['user_id'], unique=False)

    op.create_table('user_scopes',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=256), nullable=False),
    sa.UniqueConstraint('user_id', 'kind', 'value', name='user_scopes_unique')
    )
    with op.batch_alter_table('user_scopes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_scopes_user_id'), ['user_id'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('display_name', sa.String(length=128), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('vapid_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('private_pem', sa.Text(), nullable=False),
    sa.Column('public_key', sa.String(length=128), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('alerts_resident_ts', ['resident', 'ts'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('alerts_resident_ts')

    op.drop_table('vapid_keys')
    op.drop_table('users')
    with op.batch_alter_table('user_scopes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_scopes_user_id'))

    op.drop_table('user_scopes')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sessions_user_id'))

    op.drop_table('sessions')
    with op.batch_alter_table('push_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_push_subscriptions_user_id'))

    op.drop_table('push_subscriptions')
    op.drop_table('notifications')
    with op.batch_alter_table('notification_pending', schema=None) as batch_op:
        batch_op.drop_index('notification_pending_recipient')
        batch_op.drop_index('notification_pending_due')

    op.drop_table('notification_pending')
    with op.batch_alter_table('notification_attempts', schema=None) as batch_op:
        batch_op.drop_index('notification_attempts_alert')

    op.drop_table('notification_attempts')
    with op.batch_alter_table('evidence', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evidence_sha256'))
        batch_op.drop_index(batch_op.f('ix_evidence_alert_id'))

    op.drop_table('evidence')
    with op.batch_alter_table('escalation_stages', schema=None) as batch_op:
        batch_op.drop_index('escalation_due')

    op.drop_table('escalation_stages')
    op.drop_table('escalation_plans')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('audit_action_target_ts')
        batch_op.drop_index('audit_action_remote_ts')

    op.drop_table('audit_log')
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assignments_alert_id'))

    op.drop_table('assignments')
