"""lifecycle: customers' order interval and activity columns, openid index, sweep leases

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sweep_locks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=True),
    sa.Column('locked_until', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.add_column('customers', sa.Column('first_order_at', UTCDateTime(), nullable=True))
    op.add_column('customers', sa.Column('purchase_overdue_at', UTCDateTime(), nullable=True))
    op.add_column('customers', sa.Column('last_active_at', UTCDateTime(), nullable=True))
    op.create_index('ix_customers_external_id', 'customers', ['external_id'], unique=False)
    op.create_index('ix_customers_purchase_overdue', 'customers', ['purchase_overdue_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('customers') as batch:
        batch.drop_index('ix_customers_purchase_overdue')
        batch.drop_index('ix_customers_external_id')
        batch.drop_column('last_active_at')
        batch.drop_column('purchase_overdue_at')
        batch.drop_column('first_order_at')
    op.drop_table('sweep_locks')
