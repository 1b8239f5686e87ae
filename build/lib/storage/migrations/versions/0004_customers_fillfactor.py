"""customers: fillfactor 80 on PostgreSQL, so updates that touch no indexed column stay on the page

Revision ID: 0004
Revises: 0003

Applies to pages written from now on; `VACUUM FULL customers` (or pg_repack) rewrites the
existing ones in a maintenance window.
"""

from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE customers SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE customers RESET (fillfactor)")
