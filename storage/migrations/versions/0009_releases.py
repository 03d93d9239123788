"""releases: shadow, canary and evaluation runs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 21:40:00
"""

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("prompt_sha", sa.String(length=128), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("stage", sa.String(length=8), nullable=False),
        sa.Column("rollout", sa.Integer(), nullable=False),
        sa.Column("stable", sa.String(length=100), nullable=True),
        _when("started_at", nullable=False),
        _when("canary_since"),
        _when("updated_at", nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.Column("halted_reason", sa.Text(), nullable=True),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("agent"),
    )
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("suite", sa.String(length=100), nullable=False),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("critical_failures", sa.Integer(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("link", sa.Text(), nullable=True),
        _when("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_eval_runs_version", "eval_runs", ["agent", "version", "suite", "created_at"])
    op.create_table(
        "shadow_actions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("target_id", sa.String(length=200), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=True),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("dedup_key", sa.String(length=200), nullable=True),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        _when("created_at", nullable=False),
        sa.Column("human_changes", sa.JSON(), nullable=True),
        sa.Column("human_by", sa.String(length=200), nullable=True),
        _when("human_at"),
        sa.Column("matched", sa.Boolean(), nullable=True),
        sa.Column("comparison", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent", "dedup_key", name="uq_shadow_actions_dedup"),
    )
    op.create_index("ix_shadow_actions_target", "shadow_actions", ["agent", "action", "target_id", "created_at"])
    op.create_index("ix_shadow_actions_agent_time", "shadow_actions", ["agent", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_shadow_actions_agent_time", table_name="shadow_actions")
    op.drop_index("ix_shadow_actions_target", table_name="shadow_actions")
    op.drop_table("shadow_actions")
    op.drop_index("ix_eval_runs_version", table_name="eval_runs")
    op.drop_table("eval_runs")
    op.drop_table("releases")
