"""Dead letters: rows the sender gave up on are listed, retried and dropped with `handrail outbox`
(against the server's own database, SQLite and PostgreSQL), a retried one is delivered by the
running server, and `/agent status` and App Home count them, escaping the errors they carry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from sqlalchemy import select

from bot import outbound
from bot.cli import main
from bot.outbox.rows import Row, Rows
from local.slack import FakeSlack
from storage.repositories import Outbox
from storage.tables import AuditEvent, OutboxMessage
from tests.helpers import Running, config_dict
from tests.test_control_commands import command
from tests.test_home import open_home, shown

SHARED = Path(__file__).resolve().parents[2] / "shared" / "slack"
HOSTILE = "<!channel> *urgent* `x` <https://evil.example|click here> \u202egnp.exe &amp; ~gone~"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_dict() | {"roles": {"oncall": ["U0ONCALL"]}}))
    return path


@pytest.fixture
def cli(running: Running, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """`handrail ...` in this process against the server's database: (exit code, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", running.services.settings.database_url)
    monkeypatch.setenv("USER", "ops-anna")

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as usage:  # argparse's usage errors
            code = int(usage.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def announce(running: Running, agent: str, channel: str, due_in: timedelta = timedelta(0)) -> int:
    """Queue an announcement about `agent` (not sent yet), due in `due_in`; its row's id."""
    note = outbound.Undid(agent=agent, by="U0OWNER", done=1, tried=1, skipped=0)
    payload = outbound.PostPayload(channel=channel, note=note).model_dump(mode="json")
    with running.services.db.transaction() as session:
        Outbox(session).enqueue(kind="post", approval_id=None, payload=payload, now=running.clock.now() + due_in)
        session.flush()
        return max(session.scalars(select(OutboxMessage.id)))


def killed_by_slack(running: Running, slack: FakeSlack, agent: str, channel: str) -> int:
    """An announcement Slack refuses for good (channel_not_found): dead after one attempt."""
    slack.fail_next("chat.postMessage", "channel_not_found")  # first: a pass of the server's own may send it
    row_id = announce(running, agent, channel)
    running.deliver_due()
    assert row(running, row_id).status == "dead"
    return row_id


def row(running: Running, row_id: int) -> OutboxMessage:
    with running.services.db.transaction() as session:
        found = session.get(OutboxMessage, row_id)
        assert found is not None
        session.expunge(found)
        return found


def events(running: Running, name: str) -> list[AuditEvent]:
    with running.services.db.transaction() as session:
        found = list(session.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))
        session.expunge_all()
        return found


def dead_with_error(running: Running, agent: str, error: str) -> int:
    """A row made dead by the outbox's own bookkeeping with `error` as its last error (not due, so
    no pass of the server's own sends it first)."""
    row_id = announce(running, agent, "C0APPROVALS", due_in=timedelta(days=1))
    note = outbound.Undid(agent=agent, by="U0OWNER", done=1, tried=1, skipped=0)
    payload = outbound.PostPayload(channel="C0APPROVALS", note=note)
    Rows(running.services.db, running.clock).fail(Row(row_id, outbound.Kind.POST, None, payload, 9), error, None, False)
    return row_id


@pytest.mark.both_databases
def test_dead_letters_are_listed_retried_and_delivered_and_dropped(running: Running, slack: FakeSlack, cli) -> None:  # type: ignore[no-untyped-def]
    billing = killed_by_slack(running, slack, "billing-bot", "C0BILLING")
    lead = killed_by_slack(running, slack, "lead-router", "C0APPROVALS")
    # Pending and not due, so no delivery pass the server makes meanwhile sends it: neither retried nor dropped.
    waiting = announce(running, "lead-router", "C0APPROVALS", due_in=timedelta(days=1))

    code, out, err = cli("outbox", "list")
    assert code == 0 and err == ""
    header, *lines = out.splitlines()
    assert header.split() == ["id", "kind", "agent", "about", "attempts", "died_at", "last_error"]
    assert [line.split()[:5] for line in lines] == [
        [str(billing), "post", "billing-bot", "channel:C0BILLING", "1"],
        [str(lead), "post", "lead-router", "channel:C0APPROVALS", "1"],
    ]
    assert all(line.endswith("channel_not_found") for line in lines)
    code, out, _ = cli("outbox", "list", "--agent", "lead-router", "--format", "jsonl")
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["id"] == lead and record["about"] == {"type": "channel", "id": "C0APPROVALS"}
    assert record["last_error"] == "channel_not_found" and record["died_at"].endswith("Z")

    # Naming a row that is not dead changes nothing, and says why.
    code, out, err = cli("outbox", "retry", str(billing), str(waiting), "999999")
    assert code == 1 and out == ""
    assert f"no outbox row 999999; {waiting} is pending, not dead: nothing was changed" in err
    assert row(running, billing).status == "dead"
    code, _, err = cli("outbox", "drop", str(lead))
    assert code == 2 and "--reason" in err

    code, out, err = cli("outbox", "retry", str(billing), "--reason", "the channel is back")
    assert code == 0, err
    assert out.splitlines()[0] == f"queued again {billing} (post, channel:C0BILLING)"
    retried = row(running, billing)
    assert (retried.status, retried.attempts, retried.done_at) == ("pending", 0, None)

    # The running server sends it once it is due (the command stamps it with its own clock).
    before = len(slack.calls_to("chat.postMessage"))
    running.clock.set(datetime.now(UTC) + timedelta(seconds=1))
    running.deliver_due()
    sent = [c for c in slack.calls_to("chat.postMessage")[before:] if c.params["channel"] == "C0BILLING"]
    assert len(sent) == 1 and sent[0].response["ok"]
    assert row(running, billing).status == "sent"

    code, out, err = cli("outbox", "drop", str(lead), "--reason", "announced by hand")
    assert code == 0, err
    assert out.strip() == f"dropped {lead} (post, channel:C0APPROVALS)"
    assert row(running, lead).status == "dropped"
    code, _, err = cli("outbox", "drop", str(lead), "--reason", "again")
    assert code == 1 and f"{lead} is dropped, not dead" in err
    code, out, err = cli("outbox", "list")
    assert (code, out) == (0, "") and "no dead letters" in err

    [retried_event] = events(running, "outbox.retried")
    [dropped_event] = events(running, "outbox.dropped")
    assert (retried_event.actor, retried_event.reason, retried_event.agent) == (
        "cli:ops-anna",
        "the channel is back",
        "billing-bot",
    )
    assert (retried_event.object_type, retried_event.object_id) == ("channel", "C0BILLING")
    assert retried_event.after == {"outbox_id": billing, "kind": "post", "status": "pending"}
    assert (dropped_event.actor, dropped_event.reason, dropped_event.after["status"]) == (
        "cli:ops-anna",
        "announced by hand",
        "dropped",
    )
    with running.services.db.transaction() as session:  # what a count of dead rows reads
        assert session.scalar(select(OutboxMessage.id).where(OutboxMessage.status == "dead")) is None


def test_retry_all_takes_one_agents_dead_letters(running: Running, slack: FakeSlack, cli) -> None:  # type: ignore[no-untyped-def]
    billing = killed_by_slack(running, slack, "billing-bot", "C0BILLING")
    lead = killed_by_slack(running, slack, "lead-router", "C0APPROVALS")
    code, out, err = cli("outbox", "retry", "--all", "--agent", "lead-router")
    assert code == 0, err
    assert f"queued again {lead} (post, channel:C0APPROVALS)" in out and "1 row pending again" in out
    assert (row(running, lead).status, row(running, billing).status) == ("pending", "dead")
    code, _, err = cli("outbox", "retry", str(billing), "--agent", "billing-bot")
    assert code == 2 and "--agent and --kind go with --all" in err


def test_the_listing_shows_a_hostile_error_without_its_controls(running: Running, cli) -> None:  # type: ignore[no-untyped-def]
    dead_with_error(running, "lead-router", HOSTILE + "\x1b[2J\nsecond line")
    code, out, _ = cli("outbox", "list")
    assert code == 0 and "\u202e" not in out and "\x1b" not in out and len(out.splitlines()) == 2
    code, out, _ = cli("outbox", "list", "--format", "jsonl")
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["last_error"].startswith("<!channel> *urgent*") and "\x1b" not in record["last_error"]
    assert out.isascii()


def test_the_commands_refuse_a_database_that_was_never_migrated(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    for argv in (["outbox", "list"], ["outbox", "retry", "--all"], ["outbox", "drop", "1", "--reason", "x"]):
        assert main(argv) == 2
        assert "has no Handrail tables yet: run `handrail migrate` first" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_agent_status_counts_dead_letters_and_escapes_their_errors(running: Running) -> None:
    dead_with_error(running, "lead-router", "first failure")
    dead_with_error(running, "lead-router", HOSTILE)
    text = command(running, "status lead-router")
    [line] = [line for line in text.splitlines() if "dead letter" in line]
    assert line.startswith("• :mailbox_with_no_mail: 2 dead letters (2 post)")
    assert "`handrail outbox list --agent lead-router`" in line
    assert "<!channel>" not in line and "<https://" not in line and "\u202e" not in line
    assert "&lt;!channel&gt;" in line  # shown as text, inside code
    # Another agent has none; the list of all agents counts them too.
    assert "dead letter" not in command(running, "status billing-bot")
    assert "2 dead letters" in command(running, "status")


def test_home_shows_an_owners_dead_letters_and_stays_valid(running: Running) -> None:
    dead_with_error(running, "billing-bot", HOSTILE)
    view = open_home(running, "U0OWNER")
    schema = json.loads((SHARED / "slack-block-kit.schema.json").read_text())
    validator = Draft202012Validator({"$ref": "#/$defs/home_view", "$defs": schema["$defs"]})
    assert list(validator.iter_errors(view)) == []
    text = shown(view)
    assert ":mailbox_with_no_mail: 1 dead letter: messages Handrail gave up sending." in text
    assert "`handrail outbox list --agent billing-bot`" in text
    assert "<!channel>" not in text
    on_call = shown(open_home(running, "U0ONCALL"))  # on call for every agent: sees it too
    assert "1 dead letter" in on_call
