"""wecom_kf_cursors: each WeCom Customer Service account's sync_msg cursor and pull lease; wecom_kf_customers

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('wecom_kf_cursors',
    sa.Column('open_kfid', sa.String(length=64), nullable=False),
    sa.Column('cursor', sa.String(length=255), nullable=True),
    sa.Column('sync_token', sa.String(length=255), nullable=True),
    sa.Column('wanted', sa.Boolean(), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=True),
    sa.Column('locked_until', UTCDateTime(), nullable=True),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('open_kfid')
    )
    op.create_table('wecom_kf_customers',
    sa.Column('external_userid', sa.String(length=128), nullable=False),
    sa.Column('open_kfid', sa.String(length=64), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('external_userid')
    )


def downgrade() -> None:
    op.drop_table('wecom_kf_customers')
    op.drop_table('wecom_kf_cursors')
