"""An agent's callback endpoint that is down: retried on the back-off schedule (bot.outbox
retry_delay, on the injected clock) and delivered once when it comes back after a minute; when it
never comes back, the callback is dead exactly after the last attempt, not before, with its audit
event, and never tried again."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from bot import outbox
from local.slack import FakeSlack
from storage.tables import AuditEvent, OutboxMessage
from tests.helpers import AgentEndpoint, Hook, Running, ask, click, posted_card, wait_calls

pytestmark = pytest.mark.both_databases


class DownUntil(AgentEndpoint):
    """An endpoint answering 503 until a time on the server's clock, then 200; it notes when (on
    that clock) each request came."""

    def __init__(self, running: Running, until: datetime) -> None:
        super().__init__()
        self.running, self.until = running, until
        self.times: list[datetime] = []

    def answer(self, hook: Hook) -> tuple[int, str | None]:
        now = self.running.clock.now()
        self.times.append(now)
        self.statuses.append(503 if now < self.until else 200)
        return super().answer(hook)


def callback_of(running: Running, approval_id: str) -> tuple[OutboxMessage, list[AuditEvent]]:
    with running.services.db.transaction() as session:
        [row] = session.scalars(
            select(OutboxMessage).where(OutboxMessage.approval_id == approval_id, OutboxMessage.kind == "webhook")
        )
        events = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.object_id == approval_id, AuditEvent.event.like("%webhook%"))
            )
        )
        callback = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.object_id == approval_id, AuditEvent.event.like("callback.%"))
            )
        )
        return row, events + callback


def approved_with_callback(running: Running, slack: FakeSlack, endpoint: AgentEndpoint, n: int) -> str:
    created = ask(running, callback_url=endpoint.url, summary=f"request {n}")
    click(running, posted_card(slack, n), "U0REVIEWER", "approval.approve", created["id"])
    wait_calls(slack, "chat.update", n)
    return str(created["id"])


def retry_until_done(running: Running, endpoint: AgentEndpoint, attempts: int) -> None:
    """Deliver what is due; after each failed attempt, check nothing goes out a second before the
    retry is due, then move the clock to it."""
    for attempt in range(1, attempts):
        endpoint.wait_for(attempt)
        running.deliver_due()  # the pass that got the failure has recorded it
        delay = outbox.retry_delay(attempt)
        running.clock.advance(delay - timedelta(seconds=1))
        assert running.deliver_due() == 0 and len(endpoint.received) == attempt, f"early retry after {attempt}"
        running.clock.advance(timedelta(seconds=1))
        running.deliver_due()
    endpoint.wait_for(attempts)
    running.deliver_due()


def test_a_callback_endpoint_down_for_a_minute_gets_the_callback_once_when_it_is_back(
    running: Running, slack: FakeSlack
) -> None:
    start = running.clock.now()
    endpoint = DownUntil(running, start + timedelta(minutes=1))
    try:
        approval_id = approved_with_callback(running, slack, endpoint, 1)
        # 503 at 0, 5, 15 and 35 s; at 75 s the endpoint is back.
        retry_until_done(running, endpoint, 5)
        assert [(t - start).total_seconds() for t in endpoint.times] == [0, 5, 15, 35, 75]
        row, events = callback_of(running, approval_id)
        assert (row.status, row.attempts) == ("sent", 4)
        assert [e.event for e in events] == ["callback.delivered"]
        running.clock.advance(timedelta(days=1))
        assert running.deliver_due() == 0 and len(endpoint.received) == 5, "delivered once, never again"
    finally:
        endpoint.server.shutdown()


def test_a_callback_endpoint_that_stays_down_is_dead_only_after_the_last_attempt(
    running: Running, slack: FakeSlack
) -> None:
    endpoint = DownUntil(running, datetime.max.replace(tzinfo=running.clock.now().tzinfo))
    try:
        approval_id = approved_with_callback(running, slack, endpoint, 1)
        retry_until_done(running, endpoint, outbox.MAX_ATTEMPTS - 1)
        row, events = callback_of(running, approval_id)
        assert (row.status, row.attempts, events) == ("pending", outbox.MAX_ATTEMPTS - 1, []), "not dead before"

        running.clock.advance(outbox.retry_delay(outbox.MAX_ATTEMPTS - 1))
        running.deliver_due()
        endpoint.wait_for(outbox.MAX_ATTEMPTS)
        running.deliver_due()
        row, events = callback_of(running, approval_id)
        assert (row.status, row.attempts) == ("dead", outbox.MAX_ATTEMPTS)
        [dead] = events
        assert (dead.event, dead.reason, dead.after["attempts"]) == ("webhook.dead", "HTTP 503", outbox.MAX_ATTEMPTS)
        running.clock.advance(timedelta(days=1))
        assert running.deliver_due() == 0 and len(endpoint.received) == outbox.MAX_ATTEMPTS
    finally:
        endpoint.server.shutdown()
