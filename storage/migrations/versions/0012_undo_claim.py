"""undo claims expire: when an action's undo was claimed

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 16:45:00
"""

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("undo_claimed_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_column("undo_claimed_at")
