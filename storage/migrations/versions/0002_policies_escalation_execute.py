"""policies, escalation timers, quorum, execute-once

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 10:00:00
"""

import json

import sqlalchemy as sa
from alembic import op

import storage.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Requests created before policies existed keep their expiry, get no ladder, and are decided by
# the agent's approvers (an empty list means "the agent's approvers").
LEGACY_POLICY = {
    "source": "default",
    "match": "*",
    "mode": "approve",
    "approvers": [],
    "quorum": 1,
    "timeout_s": 86400.0,
    "escalation": [],
    "execute_window_s": 900.0,
    "sample": 0.0,
    "note": "created before approval policies",
}


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("decision_code", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("policy", sa.JSON(), nullable=False, server_default=json.dumps(LEGACY_POLICY)))
        batch.add_column(sa.Column("approved_by", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("steps_done", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("escalated_at", storage.tables.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("next_at", storage.tables.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("target_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("execute_by", storage.tables.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("executed_at", storage.tables.UTCDateTime(timezone=True), nullable=True))
        batch.create_index("ix_approvals_next_at", ["next_at"])
        batch.create_index("ix_approvals_same_target", ["agent", "action", "target_key", "status"])
    op.execute("UPDATE approvals SET next_at = expires_at WHERE status = 'pending'")
    with op.batch_alter_table("approvals") as batch:
        batch.alter_column("policy", server_default=None)
        batch.alter_column("approved_by", server_default=None)
        batch.alter_column("steps_done", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_index("ix_approvals_same_target")
        batch.drop_index("ix_approvals_next_at")
        for column in (
            "executed_at",
            "execute_by",
            "target_key",
            "next_at",
            "escalated_at",
            "steps_done",
            "approved_by",
            "policy",
            "decision_code",
        ):
            batch.drop_column(column)
