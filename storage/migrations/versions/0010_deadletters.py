"""dead letters and retention: the agent of a dead outbox row, and when retention purged a row

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 16:40:00
"""

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Table, and the time column the retention sweep walks, oldest first.
PURGED = {"approvals": "created_at", "actions": "created_at", "runs": "at", "outbox": "done_at", "audit_events": "at"}
UNPURGED = sa.text("purged_at IS NULL")


def _json_text(path: str) -> str:
    """SQL reading a text field of outbox.payload (a dotted path), on either backend."""
    if op.get_bind().dialect.name == "postgresql":
        *parents, last = path.split(".")
        return "(payload" + "".join(f"->'{p}'" for p in parents) + f"->>'{last}')"
    return f"json_extract(payload, '$.{path}')"


def upgrade() -> None:
    op.add_column("outbox", sa.Column("agent", sa.String(length=64), nullable=True))
    op.create_index("ix_outbox_agent", "outbox", ["status", "agent"])
    for table, column in PURGED.items():
        op.add_column(table, sa.Column("purged_at", UTCDateTime(timezone=True), nullable=True))
        name = "ix_audit_unpurged" if table == "audit_events" else f"ix_{table}_unpurged"
        op.create_index(name, table, [column], sqlite_where=UNPURGED, postgresql_where=UNPURGED)
    # Rows already dead: their agent, where SQL alone can tell it (an approval's, a callback's, an
    # announcement's); the others stay unfiled (`handrail outbox list` without --agent shows them).
    op.execute(
        "UPDATE outbox SET agent = (SELECT approvals.agent FROM approvals WHERE approvals.id = outbox.approval_id) "
        "WHERE status = 'dead' AND approval_id IS NOT NULL"
    )
    op.execute(
        f"UPDATE outbox SET agent = {_json_text('agent')} WHERE status = 'dead' AND approval_id IS NULL "
        "AND kind = 'webhook'"
    )
    op.execute(
        f"UPDATE outbox SET agent = {_json_text('note.agent')} WHERE status = 'dead' AND approval_id IS NULL "
        "AND kind = 'post'"
    )
    op.execute("UPDATE outbox SET agent = NULL WHERE agent = '*'")


def downgrade() -> None:
    for table in PURGED:
        name = "ix_audit_unpurged" if table == "audit_events" else f"ix_{table}_unpurged"
        op.drop_index(name, table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("purged_at")
    op.drop_index("ix_outbox_agent", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("agent")
