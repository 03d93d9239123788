"""The outbox as stored: rows queued by an earlier version are delivered as written, and a row no
version can read is set aside without holding up the others."""

from __future__ import annotations

from sqlalchemy import select

from local.slack import FakeSlack
from storage.repositories import Outbox
from storage.tables import OutboxMessage
from tests.helpers import Running


def queue(running: Running, kind: str, payload: dict[str, object]) -> None:
    with running.services.db.transaction() as session:
        Outbox(session).enqueue(kind=kind, approval_id=None, payload=payload, now=running.clock.now())


def test_rows_written_by_0_3_are_delivered_and_an_unreadable_row_is_set_aside(
    running: Running, slack: FakeSlack
) -> None:
    queue(running, "post", {"channel": "C0BILLING", "note": {"kind": "no_such_note"}})
    queue(running, "post", {"channel": "C0APPROVALS", "text": ":double_vertical_bar: <@U0OWNER> paused it"})
    running.call(running.services.deliverer.deliver_due)

    [post] = slack.calls_to("chat.postMessage")
    assert (post.params["channel"], post.params["text"]) == (
        "C0APPROVALS",
        ":double_vertical_bar: <@U0OWNER> paused it",
    )
    with running.services.db.transaction() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [(r.status, (r.last_error or "")[:10]) for r in rows] == [("dead", "unreadable"), ("sent", "")]
