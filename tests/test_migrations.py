"""The migrations build exactly the schema the ORM tables describe, on both backends."""

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select

from storage.db import Database, alembic_config, make_engine
from storage.tables import Approval, Base, OutboxMessage


def test_migrated_schema_matches_the_tables(db: Database) -> None:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_rows_dead_before_0010_are_filed_under_their_agent_where_sql_can_tell(database_url: str) -> None:
    """0010 records the agent of rows already dead: an approval's, a callback's, an announcement's
    (read from the JSON payload with each backend's own syntax); the others stay unfiled."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            command.upgrade(config, "0009")
            connection.commit()
            approval = {c.name: None for c in Approval.__table__.columns if c.name not in ("purged_at", "request_id")}
            now = datetime(2026, 11, 2, tzinfo=UTC)
            approval |= {
                "id": "apr_1", "agent": "lead-router", "action": "a", "status": "denied", "summary": "s",
                "request_reason": "r", "target": {}, "changes": [], "evidence": [], "params": {},
                "params_sha256": "0", "facts": {}, "request_sha256": "0", "created_at": now, "expires_at": now,
                "policy": {}, "approved_by": [], "steps_done": 0, "channel": "C1", "state_version": 1,
                "card_version": 1, "editable": [], "review_changes": 0, "ladder_shift_s": 0.0,
            }  # fmt: skip
            connection.execute(insert(Approval.__table__).values(approval))
            undid = {"kind": "undid", "agent": "billing-bot", "by": "U1", "done": 1, "tried": 1, "skipped": 0}
            rows = [
                ("card", "apr_1", {}),
                ("webhook", None, {"url": "https://a.example/h", "agent": "lead-router", "body": {"event": "x"}}),
                ("post", None, {"channel": "C0BILLING", "note": undid}),
                ("post", None, {"channel": "C0ALL", "note": undid | {"agent": "*"}}),
                ("alert", None, {"episode_id": "ep_1", "destination": "C1"}),
            ]
            outbox = OutboxMessage.__table__
            for kind, approval_id, payload in rows:
                values = {"kind": kind, "approval_id": approval_id, "payload": payload, "status": "dead"}
                values |= {"attempts": 10, "next_at": now, "created_at": now, "done_at": now}
                connection.execute(insert(outbox).values(values))
            connection.commit()
            command.upgrade(config, "head")
            connection.commit()
            found = connection.execute(select(outbox.c.kind, outbox.c.agent).order_by(outbox.c.id)).all()
        assert [tuple(row) for row in found] == [
            ("card", "lead-router"),
            ("webhook", "lead-router"),
            ("post", "billing-bot"),
            ("post", None),  # about every agent
            ("alert", None),
        ]
    finally:
        engine.dispose()
