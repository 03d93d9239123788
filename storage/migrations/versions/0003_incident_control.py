"""incident control: pauses, versions, modes, recorded actions, runs; announcements in the outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 10:00:00
"""

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("approval_id", existing_type=sa.String(length=40), nullable=True)

    op.create_table(
        "pauses",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("paused_by", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _when("created_at", nullable=False),
        _when("until"),
        _when("lifted_at"),
        sa.Column("lifted_by", sa.String(length=32), nullable=True),
    )
    op.create_index("ix_pauses_lifted_at", "pauses", ["lifted_at"])

    op.create_table(
        "agent_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("prompt_sha", sa.String(length=128), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        _when("created_at", nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("restores_id", sa.Integer(), sa.ForeignKey("agent_versions.id"), nullable=True),
    )
    op.create_index("ix_agent_versions_agent", "agent_versions", ["agent"])

    op.create_table(
        "agent_modes",
        sa.Column("agent", sa.String(length=64), primary_key=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("changed_by", sa.String(length=32), nullable=False),
        _when("changed_at", nullable=False),
    )

    op.create_table(
        "actions",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("reversible", sa.Boolean(), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=True),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        _when("created_at", nullable=False),
        sa.Column("undo_status", sa.String(length=8), nullable=True),
        sa.Column("undone_by", sa.String(length=32), nullable=True),
        _when("undone_at"),
        sa.Column("undo_error", sa.Text(), nullable=True),
        sa.UniqueConstraint("agent", "dedup_key", name="uq_actions_dedup"),
    )
    op.create_index("ix_actions_agent_time", "actions", ["agent", "created_at"])
    op.create_index("ix_actions_agent_run", "actions", ["agent", "run_id"])

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _when("started_at"),
        _when("finished_at"),
        _when("at", nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("version", sa.String(length=100), nullable=True),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("agent", "run_id", name="uq_runs_agent_run"),
    )
    op.create_index("ix_runs_agent_time", "runs", ["agent", "at"])


def downgrade() -> None:
    for table in ("runs", "actions", "agent_modes", "agent_versions", "pauses"):
        op.drop_table(table)
    op.execute("DELETE FROM outbox WHERE approval_id IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("approval_id", existing_type=sa.String(length=40), nullable=False)
