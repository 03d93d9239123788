"""Retention: raw payloads of finished things older than HANDRAIL_RETENTION are purged in batches
(the manual clock moves time), younger and pending ones keep theirs, audit events keep their
summary, readers say "purged", and a retention too short stops the start."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot import retention
from bot.cards.approval import approval_card
from bot.clock import ManualClock
from bot.config import Settings
from bot.models import ApprovalOut
from local.slack import FakeSlack
from storage.tables import ActionRecord, Approval, AuditEvent, OutboxMessage, Run
from tests.helpers import Running, ask, posted_card, run_handrail, serve
from tests.test_reports import command, shown

DAY = timedelta(days=1)


@pytest.fixture
def quiet(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Running]:
    """The server without its scheduler: only the test runs the retention sweep."""
    yield from serve(settings.model_copy(update={"handrail_scheduler": False}), clock, slack)


def report_run(running: Running, run_id: str, error: str, ago: timedelta = timedelta(0)) -> None:
    at = (running.clock.now() - ago).isoformat()
    body = {"run_id": run_id, "status": "failed", "error": error, "error_category": "api", "finished_at": at}
    assert running.agent().post("/v1/runs", json=body).status_code in (200, 201, 202)


def record_action(running: Running, key: str, reversible: bool) -> dict[str, Any]:
    body = {
        "agent": "lead-router",
        "action": "crm.update_owner",
        "dedup_key": key,
        "reversible": reversible,
        "target": {"system": "salesforce", "object": "Lead", "id": key},
        "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
    }
    response = running.agent().post("/v1/actions", json=body)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def cancel(running: Running, approval_id: str) -> None:
    response = running.agent().post(f"/v1/approvals/{approval_id}/cancel", json={"reason": "no longer needed"})
    assert response.status_code == 200, response.text


@pytest.mark.both_databases
def test_old_raw_payloads_are_purged_in_batches_and_readers_say_so(
    quiet: Running, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = quiet
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches of each table
    old = ask(running, idempotency_key="old")
    posted_card(slack)
    cancel(running, old["id"])
    pending = ask(running, idempotency_key="pending", action="lead.other")  # never decided: kept whatever its age
    for i in range(5):
        report_run(running, f"run-{i}", f"HTTP 500 from the CRM for ACME, contact jane@acme.example #{i}")
    record_action(running, "gone-1", reversible=False)
    record_action(running, "undoable-1", reversible=True)
    running.deliver_due()

    running.clock.advance(31 * DAY)
    young = ask(running, idempotency_key="young", action="lead.third")
    cancel(running, young["id"])
    report_run(running, "run-young", "still fresh")
    running.deliver_due()

    counts = running.call(running.services.retention.purge)
    assert counts["approvals"] == 1 and counts["runs"] == 5 and counts["actions"] == 1
    assert counts["audit_events"] >= 4 and counts["outbox"] >= 2

    with running.services.db.transaction() as session:
        approvals = {a.id: a for a in session.scalars(select(Approval))}
        runs = {r.run_id: r for r in session.scalars(select(Run))}
        actions = {a.dedup_key: a for a in session.scalars(select(ActionRecord))}
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        outbox = list(session.scalars(select(OutboxMessage)))
        purged = approvals[old["id"]]
        assert (purged.params, purged.changes, purged.purged_at) == ({}, [], running.clock.now())
        assert purged.summary == "Move ACME to Closed Won" and purged.decision_reason == "no longer needed"
        assert approvals[pending["id"]].params == {"id": "006XYZ", "stage": "Closed Won"}
        assert approvals[pending["id"]].purged_at is None
        assert approvals[young["id"]].params and approvals[young["id"]].purged_at is None
        assert all(runs[f"run-{i}"].error is None and runs[f"run-{i}"].purged_at for i in range(5))
        assert runs["run-young"].error == "still fresh"
        assert actions["gone-1"].changes == [] and actions["gone-1"].purged_at is not None
        assert actions["undoable-1"].changes and actions["undoable-1"].purged_at is None  # undo still needs them
        assert all(m.payload == {"purged": True} for m in outbox if m.purged_at is not None)
        assert all(m.status in ("sent", "dropped") for m in outbox if m.purged_at is not None)
        cutoff = running.clock.now() - 30 * DAY
        for event in events:
            if event.at < cutoff:  # the summary stays: who, what, on which object, when, why
                assert (event.before, event.after) == ({"purged": True}, {"purged": True}), event.event
                assert event.actor and event.event and event.object_type and event.object_id
        cancelled = next(e for e in events if e.event == "approval.cancelled" and e.object_id == old["id"])
        assert (cancelled.actor, cancelled.reason, cancelled.agent) == (
            "agent:lead-router",
            "no longer needed",
            "lead-router",
        )
        [run_event] = [e for e in events if e.event == "retention.purged"]
        assert run_event.after is not None and run_event.after["counts"] == counts
        card = approval_card(purged, running.services.config.agents["lead-router"])

    # Readers say what was purged instead of showing nothing as if it were real.
    assert "Changes and params purged" in str(card.blocks)
    got = ApprovalOut.model_validate(running.agent().get(f"/v1/approvals/{old['id']}").json())
    assert got.purged_at is not None and got.params == {}
    assert running.agent().get(f"/v1/approvals/{pending['id']}").json()["purged_at"] is None
    runs_text = command(running, "runs lead-router failed")["text"]
    assert runs_text.count("error text purged") == 5 and "jane@acme" not in runs_text and "still fresh" in runs_text
    one = shown(command(running, "runs lead-router run-0"))
    assert "Error (api): :wastebasket: _its text purged" in one
    replayed = record_action(running, "gone-1", reversible=False)  # the agent sends it again: the record as kept
    assert replayed["changes"] == [] and replayed["purged_at"] is not None

    # Nothing is left to purge: the next run changes nothing and records nothing.
    assert running.call(running.services.retention.purge) == {}
    with running.services.db.transaction() as session:
        assert len(list(session.scalars(select(AuditEvent).where(AuditEvent.event == "retention.purged")))) == 1


def test_the_sweep_runs_retention_at_most_hourly(quiet: Running) -> None:
    report_run(quiet, "run-1", "boom")
    quiet.clock.advance(31 * DAY)
    assert quiet.call(quiet.services.retention.maybe_purge).get("runs") == 1
    report_run(quiet, "run-2", "boom", ago=31 * DAY)  # reported late: old already
    quiet.clock.advance(timedelta(minutes=59))
    assert quiet.call(quiet.services.retention.maybe_purge) == {}  # within the hour: not run
    quiet.clock.advance(timedelta(minutes=1))
    assert quiet.call(quiet.services.retention.maybe_purge).get("runs") == 1


@pytest.mark.parametrize(("value", "message"), [("1h", "1h is shorter than a day"), ("forever", "is not a duration")])
def test_a_retention_that_cannot_be_used_stops_the_start(tmp_path: Path, value: str, message: str) -> None:
    result = run_handrail("migrate", cwd=tmp_path, HANDRAIL_RETENTION=value, DATABASE_URL=f"sqlite:///{tmp_path}/h.db")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("handrail: HANDRAIL_RETENTION: ") and message in line
