"""staff_login_attempts: an index by client address, for the login throttle

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_staff_login_attempts_remote_time', 'staff_login_attempts', ['remote', 'attempted_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_staff_login_attempts_remote_time', table_name='staff_login_attempts')
