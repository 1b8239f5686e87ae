"""customer groups: the groups, memberships, what happened in each group, daily figures

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import BigId, UTCDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('chat_groups',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('member_count', sa.Integer(), nullable=False),
    sa.Column('welcome_post_id', BigId, nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('last_activity_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('channel', 'external_id', name='uq_chat_groups_channel_external')
    )
    op.create_table('group_daily_stats',
    sa.Column('group_id', BigId, nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('members', sa.Integer(), nullable=False),
    sa.Column('joins', sa.Integer(), nullable=False),
    sa.Column('leaves', sa.Integer(), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.Column('speakers', sa.Integer(), nullable=False),
    sa.Column('answers', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['chat_groups.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'day')
    )
    op.create_table('group_log',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=True),
    sa.Column('group_id', BigId, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('member_id', sa.String(length=128), nullable=True),
    sa.Column('customer_id', BigId, nullable=True),
    sa.Column('members', sa.JSON(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('addressed', sa.Boolean(), nullable=False),
    sa.Column('delivery', sa.String(length=16), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('due_at', UTCDateTime(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['group_id'], ['chat_groups.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('channel', 'event_id', name='uq_group_log_event')
    )
    op.create_index('ix_group_log_customer', 'group_log', ['customer_id'], unique=False)
    op.create_index('ix_group_log_due', 'group_log', ['delivery', 'due_at'], unique=False)
    op.create_index('ix_group_log_group', 'group_log', ['group_id', 'id'], unique=False)
    op.create_table('group_memberships',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('group_id', BigId, nullable=False),
    sa.Column('member_id', sa.String(length=128), nullable=False),
    sa.Column('customer_id', BigId, nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('joined_at', UTCDateTime(), nullable=True),
    sa.Column('left_at', UTCDateTime(), nullable=True),
    sa.Column('last_spoke_on', sa.Date(), nullable=True),
    sa.Column('welcome_post_id', BigId, nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['group_id'], ['chat_groups.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('group_id', 'member_id', name='uq_group_memberships_member')
    )
    op.create_index('ix_group_memberships_customer', 'group_memberships', ['customer_id'], unique=False)
    op.create_index('ix_group_memberships_welcome', 'group_memberships', ['welcome_post_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_group_memberships_welcome', table_name='group_memberships')
    op.drop_index('ix_group_memberships_customer', table_name='group_memberships')
    op.drop_table('group_memberships')
    op.drop_index('ix_group_log_group', table_name='group_log')
    op.drop_index('ix_group_log_due', table_name='group_log')
    op.drop_index('ix_group_log_customer', table_name='group_log')
    op.drop_table('group_log')
    op.drop_table('group_daily_stats')
    op.drop_table('chat_groups')
