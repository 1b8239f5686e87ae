"""platform_tokens: the refresh lease; flow_schedules: when each crontab trigger last fired

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('platform_tokens', sa.Column('refreshing_by', sa.String(length=128), nullable=True))
    op.add_column('platform_tokens', sa.Column('refreshing_until', UTCDateTime(), nullable=True))
    op.create_table('flow_schedules',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('crontab', sa.String(length=128), nullable=False),
    sa.Column('last_fired_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade() -> None:
    op.drop_table('flow_schedules')
    with op.batch_alter_table('platform_tokens') as batch:
        batch.drop_column('refreshing_until')
        batch.drop_column('refreshing_by')
