"""owners and reps: reviews, actions' versions, hourly counts per version, suggestions, summaries

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 07:00:00
"""

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=False, server_default="0")


def upgrade() -> None:
    with op.batch_alter_table("approvals") as approvals:
        approvals.add_column(sa.Column("review", sa.String(length=12), nullable=True))
        approvals.add_column(sa.Column("reviewed_by", sa.String(length=32), nullable=True))
        approvals.add_column(_when("reviewed_at"))
        approvals.add_column(_count("review_changes"))
        approvals.add_column(sa.Column("review_comment", sa.Text(), nullable=True))
    op.create_index(
        "ix_approvals_agent_time",
        "approvals",
        ["agent", "created_at", "agent_version", "status", "decision_code", "decided_at", "run_id", "review"],
    )
    op.create_index("ix_approvals_agent_run", "approvals", ["agent", "run_id"])
    reviewed = sa.text("review IS NOT NULL")
    op.create_index(
        "ix_approvals_reviewed", "approvals", ["agent", "created_at"], sqlite_where=reviewed, postgresql_where=reviewed
    )
    with op.batch_alter_table("actions") as actions:
        actions.add_column(sa.Column("version", sa.String(length=100), nullable=True))
    op.create_table(
        "version_hours",
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        _when("start", nullable=False),
        _count("runs"),
        _count("failed"),
        _count("partial"),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
        _count("timed"),
        sa.Column("duration_s", sa.Float(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("agent", "version", "start"),
    )
    op.create_table(
        "suggestions",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("suggestion_id", sa.String(length=200), nullable=True),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("to", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column("version", sa.String(length=100), nullable=True),
        sa.Column("callback_url", sa.Text(), nullable=True),
        _when("created_at", nullable=False),
        sa.Column("choice", sa.String(length=12), nullable=True),
        sa.Column("chosen_by", sa.String(length=32), nullable=True),
        _when("chosen_at"),
        _count("changes"),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("message_ts", sa.String(length=32), nullable=True),
        sa.Column("state_version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("card_version", sa.Integer(), nullable=False, server_default="0"),
        _when("card_lease_until"),
        sa.UniqueConstraint("agent", "suggestion_id", name="uq_suggestions_agent_key"),
    )
    op.create_index("ix_suggestions_agent_time", "suggestions", ["agent", "created_at", "version", "choice"])
    op.create_table(
        "summary_timers",
        sa.Column("key", sa.String(length=80), primary_key=True),
        _when("next_at", nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_summary_timers_next_at", "summary_timers", ["next_at"])
    op.create_table(
        "summary_periods",
        sa.Column("key", sa.String(length=80), nullable=False),
        _when("start", nullable=False),
        _when("end", nullable=False),
        sa.Column("posted", sa.Boolean(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=True),
        _when("created_at", nullable=False),
        sa.PrimaryKeyConstraint("key", "start"),
    )


def downgrade() -> None:
    op.drop_table("summary_periods")
    op.drop_index("ix_summary_timers_next_at", table_name="summary_timers")
    op.drop_table("summary_timers")
    op.drop_index("ix_suggestions_agent_time", table_name="suggestions")
    op.drop_table("suggestions")
    op.drop_table("version_hours")
    with op.batch_alter_table("actions") as actions:
        actions.drop_column("version")
    op.drop_index("ix_approvals_reviewed", table_name="approvals")
    op.drop_index("ix_approvals_agent_run", table_name="approvals")
    op.drop_index("ix_approvals_agent_time", table_name="approvals")
    with op.batch_alter_table("approvals") as approvals:
        for column in ("review_comment", "review_changes", "reviewed_at", "reviewed_by", "review"):
            approvals.drop_column(column)
