"""callback_nonces: signed callbacks' (timestamp, nonce) pairs while their signature is accepted

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('callback_nonces',
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'timestamp', 'nonce')
    )
    op.create_index('ix_callback_nonces_expires', 'callback_nonces', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_callback_nonces_expires', table_name='callback_nonces')
    op.drop_table('callback_nonces')
