"""alerts: run fields, rolling run and action buckets, alert checks, episodes, their messages and mutes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:00:00
"""

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=False, server_default="0")


CATEGORIES = ("parsing", "validation", "api", "timeout", "permission", "other")


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("error_category", sa.String(length=16), nullable=True))
        runs.add_column(sa.Column("tokens", sa.BigInteger(), nullable=True))
    op.create_table(
        "run_buckets",
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("width", sa.String(length=1), nullable=False),
        _when("start", nullable=False),
        _count("runs"),
        _count("failed"),
        _count("partial"),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
        *(_count(f"err_{category}") for category in CATEGORIES),
        sa.PrimaryKeyConstraint("agent", "width", "start"),
    )
    op.create_table(
        "action_buckets",
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        _when("start", nullable=False),
        _count("actions"),
        _count("duplicates"),
        sa.PrimaryKeyConstraint("agent", "action", "start"),
    )
    op.create_table(
        "alert_checks",
        sa.Column("agent", sa.String(length=64), nullable=False),
        _when("next_at"),
        sa.PrimaryKeyConstraint("agent"),
    )
    op.create_index("ix_alert_checks_next_at", "alert_checks", ["next_at"])
    op.create_table(
        "alert_episodes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("open_key", sa.String(length=320), nullable=True),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        _when("started_at", nullable=False),
        _when("resolved_at"),
        _when("clear_since"),
        sa.Column("finding", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=True),
        _when("reminded_at", nullable=False),
        sa.Column("acknowledged_by", sa.String(length=32), nullable=True),
        _when("acknowledged_at"),
        sa.Column("paused_by", sa.String(length=32), nullable=True),
        _when("paused_at"),
        _when("held_since"),
        sa.Column("held_for", sa.Float(), nullable=False, server_default="0"),
        sa.Column("quiet", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("paged", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    op.create_index("ix_alert_episodes_agent", "alert_episodes", ["agent", "started_at"])
    op.create_table(
        "alert_messages",
        sa.Column("episode_id", sa.String(length=40), nullable=False),
        sa.Column("destination", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("message_ts", sa.String(length=32), nullable=True),
        sa.Column("shown_version", sa.Integer(), nullable=False),
        _when("lease_until"),
        sa.ForeignKeyConstraint(["episode_id"], ["alert_episodes.id"]),
        sa.PrimaryKeyConstraint("episode_id", "destination"),
    )
    op.create_table(
        "alert_mutes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        _when("until", nullable=False),
        sa.Column("muted_by", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _when("created_at", nullable=False),
        sa.Column("episode_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_mutes_agent", "alert_mutes", ["agent", "until"])


def downgrade() -> None:
    op.drop_index("ix_alert_mutes_agent", table_name="alert_mutes")
    op.drop_table("alert_mutes")
    op.drop_table("alert_messages")
    op.drop_index("ix_alert_episodes_agent", table_name="alert_episodes")
    op.drop_table("alert_episodes")
    op.drop_index("ix_alert_checks_next_at", table_name="alert_checks")
    op.drop_table("alert_checks")
    op.drop_table("action_buckets")
    op.drop_table("run_buckets")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("tokens")
        runs.drop_column("error_category")
