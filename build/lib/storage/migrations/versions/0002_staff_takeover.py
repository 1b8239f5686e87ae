"""staff takeover: staff accounts, login sessions and attempts, conversation state changes,
and the escalation columns of conversations

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('staff_accounts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('last_login_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('staff_login_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('remote', sa.String(length=64), nullable=True),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('attempted_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_staff_login_attempts_name_time', 'staff_login_attempts', ['name', 'attempted_at'], unique=False)
    op.create_table('staff_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash')
    )
    op.create_index('ix_staff_sessions_staff', 'staff_sessions', ['staff_id'], unique=False)
    op.create_table('conversation_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('conversation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=False),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('actor', sa.String(length=32), nullable=False),
    sa.Column('staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_accounts.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_conversation_changes_conversation', 'conversation_changes', ['conversation_id', 'id'], unique=False)
    op.add_column('conversations', sa.Column('assigned_staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
    op.add_column('conversations', sa.Column('escalation_reason', sa.String(length=32), nullable=True))
    op.add_column('conversations', sa.Column('queued_at', UTCDateTime(), nullable=True))
    op.add_column('conversations', sa.Column('claimed_at', UTCDateTime(), nullable=True))
    op.add_column('conversations', sa.Column('first_staff_response_at', UTCDateTime(), nullable=True))
    op.add_column('conversations', sa.Column('handling_seconds', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('conversations', sa.Column('wait_message_sent_at', UTCDateTime(), nullable=True))
    op.add_column('conversations', sa.Column('closed_at', UTCDateTime(), nullable=True))
    op.create_index('ix_conversations_state_queued', 'conversations', ['state', 'queued_at'], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes (MySQL refuses to drop one a foreign key needs).
    with op.batch_alter_table('conversations') as batch:
        batch.drop_index('ix_conversations_state_queued')
        for column in ('closed_at', 'wait_message_sent_at', 'handling_seconds', 'first_staff_response_at',
                       'claimed_at', 'queued_at', 'escalation_reason', 'assigned_staff_id'):
            batch.drop_column(column)
    op.drop_table('conversation_changes')
    op.drop_table('staff_sessions')
    op.drop_table('staff_login_attempts')
    op.drop_table('staff_accounts')
