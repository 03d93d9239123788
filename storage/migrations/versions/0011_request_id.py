"""request_id: the id of the HTTP request that created an approval, for its later log lines

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 16:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as approvals:
        approvals.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as approvals:
        approvals.drop_column("request_id")
