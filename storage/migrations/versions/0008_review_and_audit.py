"""review and audit: Edit & approve, "I'm on it", actions joined to approvals, audit filters, config state

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 17:00:00
"""

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def _json_text(column: str, key: str) -> str:
    """SQL reading a JSON column's top-level text field, on either backend."""
    if op.get_bind().dialect.name == "postgresql":
        return f"({column}->>'{key}')"
    return f"json_extract({column}, '$.{key}')"


def upgrade() -> None:
    with op.batch_alter_table("approvals") as approvals:
        approvals.add_column(sa.Column("editable", sa.JSON(), nullable=False, server_default="[]"))
        approvals.add_column(sa.Column("proposed_params", sa.JSON(), nullable=True))
        approvals.add_column(sa.Column("edits", sa.JSON(), nullable=True))
        approvals.add_column(sa.Column("edited_by", sa.String(length=32), nullable=True))
        approvals.add_column(_when("edited_at"))
        approvals.add_column(sa.Column("acked_by", sa.String(length=32), nullable=True))
        approvals.add_column(_when("acked_at"))
        approvals.add_column(_when("ack_until"))
        approvals.add_column(sa.Column("ladder_shift_s", sa.Float(), nullable=False, server_default="0"))
        approvals.add_column(sa.Column("target_id", sa.String(length=200), nullable=True))
    op.create_index("ix_approvals_target", "approvals", ["target_id", "created_at"])
    with op.batch_alter_table("actions") as actions:
        actions.add_column(sa.Column("approval_id", sa.String(length=40), nullable=True))
        actions.add_column(sa.Column("target_id", sa.String(length=200), nullable=True))
    op.create_index("ix_actions_approval_id", "actions", ["approval_id"])
    op.create_index("ix_actions_target", "actions", ["target_id", "created_at"])
    with op.batch_alter_table("audit_events") as audit:
        audit.add_column(sa.Column("agent", sa.String(length=64), nullable=True))
        audit.add_column(sa.Column("target_id", sa.String(length=200), nullable=True))
    op.create_table(
        "config_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        _when("changed_at", nullable=False),
        sa.Column("deployed_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )

    # What existing rows already say: the target's id, and which agent an audit event is about.
    op.execute(f"UPDATE approvals SET target_id = {_json_text('target', 'id')}")
    op.execute(f"UPDATE actions SET target_id = {_json_text('target', 'id')}")
    op.execute("UPDATE audit_events SET agent = object_id WHERE object_type = 'agent'")
    for object_type, table, column in (
        ("approval", "approvals", "target_id"),
        ("alert", "alert_episodes", None),
        ("suggestion", "suggestions", None),
    ):
        op.execute(
            f"UPDATE audit_events SET agent = (SELECT agent FROM {table} WHERE {table}.id = audit_events.object_id)"
            f" WHERE object_type = '{object_type}'"
        )
        if column:
            op.execute(
                f"UPDATE audit_events SET target_id = (SELECT {column} FROM {table}"
                f" WHERE {table}.id = audit_events.object_id) WHERE object_type = '{object_type}'"
            )
    op.create_index("ix_audit_agent", "audit_events", ["agent", "id"])
    op.create_index("ix_audit_target", "audit_events", ["target_id", "id"])
    op.create_index("ix_audit_actor", "audit_events", ["actor", "id"])
    op.create_index("ix_audit_event", "audit_events", ["event", "id"])


def downgrade() -> None:
    for name in ("ix_audit_event", "ix_audit_actor", "ix_audit_target", "ix_audit_agent"):
        op.drop_index(name, table_name="audit_events")
    op.drop_table("config_state")
    with op.batch_alter_table("audit_events") as audit:
        audit.drop_column("target_id")
        audit.drop_column("agent")
    op.drop_index("ix_actions_target", table_name="actions")
    op.drop_index("ix_actions_approval_id", table_name="actions")
    with op.batch_alter_table("actions") as actions:
        actions.drop_column("target_id")
        actions.drop_column("approval_id")
    op.drop_index("ix_approvals_target", table_name="approvals")
    with op.batch_alter_table("approvals") as approvals:
        for column in (
            "target_id",
            "ladder_shift_s",
            "ack_until",
            "acked_at",
            "acked_by",
            "edited_at",
            "edited_by",
            "edits",
            "proposed_params",
            "editable",
        ):
            approvals.drop_column(column)
