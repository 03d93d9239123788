"""The audit trail read back: GET /v1/audit (filters, pages stable under inserts, who may read what,
hostile parameters), the execution lane's events (an action recorded with its approval, undo
claims and finishes, dead outbox rows filed under their agent and target), and `handrail audit
export` / `verify` run as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot import outbound, runs
from bot.audit import encode_cursor
from bot.clock import ManualClock
from bot.config import ConfigError, parse_config
from bot.control import undo
from bot.models import ActionIn
from bot.outbox.rows import Row, Rows
from storage.db import Database
from storage.repositories import Audit
from storage.tables import AuditEvent
from tests.helpers import T0, Running, ask, config_dict, run_handrail

ADMIN_TOKEN = "tok-admin-audit-3"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"admin_token_sha256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def admin(running: Running) -> httpx.Client:
    return httpx.Client(base_url=running.url, headers=ADMIN, timeout=30)


def record(db: Database, at: datetime, **fields: Any) -> int:
    """One audit event written as the domain writes them; its id."""
    values: dict[str, Any] = {"actor": "system", "event": "test.event", "object_type": "agent", "object_id": "x"}
    with db.transaction() as session:
        Audit(session).record(at=at, **(values | fields))
        session.flush()
        return int(session.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)) or 0)


def trail(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", params=params)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [event["id"] for event in events]


def action(**overrides: Any) -> dict[str, Any]:
    return {
        "agent": "lead-router",
        "action": "lead.update_owner",
        "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
        "changes": [{"field": "OwnerId", "before": "005A", "after": "005B"}],
    } | overrides


# --- filters -------------------------------------------------------------------------------------


@pytest.fixture
def four(running: Running) -> dict[str, int]:
    db = running.services.db
    return {
        "approved": record(
            db,
            T0 - timedelta(hours=3),
            actor="user:U0REVIEWER",
            event="approval.approved",
            agent="lead-router",
            target_id="006A",
        ),
        "denied": record(
            db,
            T0 - timedelta(hours=2),
            actor="U0REVIEWER",
            event="approval.denied",
            agent="lead-router",
            target_id="006B",
        ),
        "recorded": record(
            db,
            T0 - timedelta(hours=1),
            actor="agent:lead-router",
            event="action.recorded",
            agent="lead-router",
            target_id="006A",
        ),
        "muted": record(db, T0, actor="user:U0OTHER", event="alert.muted", object_id="billing-bot"),
        "config": record(db, T0, actor="deploy:ci", event="config.changed", object_type="config", object_id="ab12"),
    }


def test_each_filter_narrows_the_trail_newest_first(running: Running, four: dict[str, int]) -> None:
    e = four
    with admin(running) as client:
        assert ids(trail(client)) == [e["config"], e["muted"], e["recorded"], e["denied"], e["approved"]]
        assert ids(trail(client, target="006A")) == [e["recorded"], e["approved"]]
        assert ids(trail(client, agent="billing-bot")) == [e["muted"]], "an agent's own object files it there"
        assert ids(trail(client, actor="U0REVIEWER")) == [e["denied"], e["approved"]], "U… also finds user:U…"
        assert ids(trail(client, actor="user:U0REVIEWER")) == [e["approved"]]
        assert ids(trail(client, actor="agent:lead-router")) == [e["recorded"]]
        assert ids(trail(client, event="approval.denied")) == [e["denied"]]
        assert ids(trail(client, since=(T0 - timedelta(hours=2)).isoformat())) == [
            e["config"],
            e["muted"],
            e["recorded"],
            e["denied"],
        ]
        assert ids(trail(client, until=(T0 - timedelta(hours=1)).isoformat())) == [e["denied"], e["approved"]]
        between = {"since": (T0 - timedelta(hours=2)).isoformat(), "until": (T0 - timedelta(hours=1)).isoformat()}
        assert ids(trail(client, **between)) == [e["denied"]]
        assert ids(trail(client, target="006A", event="action.recorded")) == [e["recorded"]]
        assert trail(client, target="nothing-there") == []
        first = trail(client, event="approval.approved")[0]
    assert first == {
        "id": e["approved"],
        "at": "2026-11-02T07:00:00Z",
        "actor": "user:U0REVIEWER",
        "event": "approval.approved",
        "object_type": "agent",
        "object_id": "x",
        "agent": "lead-router",
        "target_id": "006A",
        "before": None,
        "after": None,
        "reason": None,
        "source": None,
        "evidence": None,
    }


# --- who may read what ----------------------------------------------------------------------------


def test_the_admin_reads_everything_and_an_agent_only_its_own_events(running: Running, four: dict[str, int]) -> None:
    e = four
    with running.agent() as lead:
        assert ids(trail(lead)) == [e["recorded"], e["denied"], e["approved"]], "nor the config's, nor others'"
        assert ids(trail(lead, agent="lead-router", target="006A")) == [e["recorded"], e["approved"]]
        refused = lead.get("/v1/audit", params={"agent": "billing-bot"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    with running.agent("billing-bot") as billing:
        assert ids(trail(billing)) == [e["muted"]]
    with admin(running) as client:
        assert len(trail(client)) == 5
        # The admin token opens this route only.
        other = client.get("/v1/approvals/apr_00000000000000000000")
        assert other.status_code == 401 and "admin token" in other.json()["error"]["message"]
        body = client.post("/v1/actions", json=action())
        assert body.status_code == 401, "refused at the edge, before its body is read"
        # A GET that declares a body goes through the edge's token check: it knows the admin token here.
        assert client.get("/v1/audit", headers={"Content-Length": "0"}).status_code == 200
    anonymous = httpx.get(f"{running.url}/v1/audit", timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated"
    wrong = httpx.get(f"{running.url}/v1/audit", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401


def test_the_admin_token_is_optional_and_must_be_its_own() -> None:
    config = parse_config(config_dict())
    assert config.admin_token_sha256 is None and not config.is_admin_token_hash(hashlib.sha256(b"").hexdigest())
    same = config_dict() | {"admin_token_sha256": config_dict()["agents"]["lead-router"]["token_sha256"]}
    with pytest.raises(ConfigError) as raised:
        parse_config(same)
    assert "admin_token_sha256: is the same as agents.lead-router.token_sha256" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        parse_config(config_dict() | {"admin_token_sha256": "secret"})
    assert "admin_token_sha256: must be the SHA-256 of the admin token" in str(raised.value)


# --- hostile and malformed parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"cursor": "not a cursor!"}, "bad_cursor", "next_cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"a1.0").decode()}, "bad_cursor", "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"zz.12").decode()}, "bad_cursor", "cursor"),
        ({"cursor": "QQ"}, "bad_cursor", "cursor"),
        ({"cursor": "x" * 41}, "invalid_request", "cursor"),
        ({"limit": "0"}, "invalid_request", "limit"),
        ({"limit": "1001"}, "invalid_request", "limit"),
        ({"limit": "many"}, "invalid_request", "limit"),
        ({"since": "2026-11-02T10:00:00"}, "invalid_request", "time zone"),
        ({"since": "yesterday"}, "invalid_request", "since"),
        ({"since": "9999-12-31T23:00:00-05:00"}, "invalid_request", "9999"),
        ({"since": "2026-11-02T10:00:00Z", "until": "2026-11-01T10:00:00Z"}, "invalid_request", "before"),
        ({"target": "a\x00b"}, "invalid_request", "NUL"),
        ({"target": "t" * 201}, "invalid_request", "target"),
        ({"event": "e" * 65}, "invalid_request", "event"),
        ({"actor": "user:\x00"}, "invalid_request", "actor"),
    ],
)
def test_bad_parameters_get_a_422_that_says_which(
    running: Running, params: dict[str, str], code: str, words: str
) -> None:
    with admin(running) as client:
        response = client.get("/v1/audit", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error


# --- pages ---------------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_pages_neither_repeat_nor_skip_while_events_are_recorded_between_them(running: Running) -> None:
    db = running.services.db
    before = [record(db, T0, agent="lead-router" if i % 2 else "billing-bot", object_id=f"o{i}") for i in range(25)]
    seen: list[int] = []
    pages = 0
    cursor = None
    with admin(running) as client:
        while True:
            params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/audit", params=params).json()
            seen += ids(page["events"])
            pages += 1
            for i in range(4):  # recorded while the reader is between pages: newer than any page's cursor
                record(db, T0, agent="lead-router", object_id=f"new{pages}-{i}")
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == sorted(before, reverse=True) and pages == 3, "each event there was once, nothing new"
    # A filtered walk pages the same way.
    walked: list[int] = []
    cursor = None
    with running.agent() as lead:
        while True:
            page = lead.get("/v1/audit", params={"limit": 3} | ({"cursor": cursor} if cursor else {})).json()
            walked += ids(page["events"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    with db.transaction() as session:
        theirs = session.scalars(
            select(AuditEvent.id).where(AuditEvent.agent == "lead-router").order_by(AuditEvent.id.desc())
        ).all()
    assert walked == list(theirs)


@pytest.mark.both_databases
def test_pages_stay_whole_under_concurrent_writes(running: Running) -> None:
    """Agents record actions (each an audit event) the whole time the trail is read page by page:
    every event there was when reading began is read once, in order."""
    for i in range(30):
        assert running.agent().post("/v1/actions", json=action(dedup_key=f"pre-{i}")).status_code == 201
    with running.services.db.transaction() as session:
        existing = set(session.scalars(select(AuditEvent.id)).all())
    stop = threading.Event()
    written = []

    def keep_writing() -> None:
        with running.agent() as agent:
            n = 0
            while not stop.is_set():
                n += 1
                response = agent.post("/v1/actions", json=action(dedup_key=f"during-{n}"))
                written.append(response.status_code)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    seen: list[int] = []
    try:
        cursor = None
        with admin(running) as client:
            while True:
                page = client.get("/v1/audit", params={"limit": 4} | ({"cursor": cursor} if cursor else {})).json()
                seen += ids(page["events"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
    finally:
        stop.set()
        writer.join(30)
    assert written and set(written) == {201}
    assert seen == sorted(set(seen), reverse=True), "strictly newest first: nothing twice"
    assert existing <= set(seen), "nothing that was there is skipped"


def test_a_cursor_is_opaque_and_round_trips(running: Running) -> None:
    db = running.services.db
    made = [record(db, T0, object_id=f"o{i}") for i in range(3)]
    with admin(running) as client:
        first = client.get("/v1/audit", params={"limit": 2}).json()
        assert ids(first["events"]) == [made[2], made[1]] and first["next_cursor"] == encode_cursor(made[1])
        last = client.get("/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert ids(last["events"]) == [made[0]] and last["next_cursor"] is None
        exact = client.get("/v1/audit", params={"limit": 3}).json()
        assert exact["next_cursor"] is None, "a page that ends the trail says so"


# --- the execution lane: what recording and undoing leave ----------------------------------------


def test_an_action_records_an_event_with_its_approval(running: Running) -> None:
    approval = ask(running)
    with running.agent() as agent:
        response = agent.post(
            "/v1/actions",
            json=action(
                target={"system": "salesforce", "object": "Opportunity", "id": "006XYZ"},
                run_id="run-7",
                version="v3",
                approval_id=approval["id"],
                dedup_key="once",
            ),
        )
        assert response.status_code == 201, response.text
        recorded = response.json()
        assert recorded["approval_id"] == approval["id"]
        # The approval id is part of what a replay must match.
        replay = agent.post(
            "/v1/actions",
            json=action(
                target={"system": "salesforce", "object": "Opportunity", "id": "006XYZ"},
                run_id="run-7",
                version="v3",
                dedup_key="once",
            ),
        )
        assert replay.status_code == 409 and replay.json()["error"]["code"] == "dedup_conflict"
        for wrong in ("apr_00000000000000000000", "../../etc"):
            refused = agent.post("/v1/actions", json=action(approval_id=wrong))
            assert refused.status_code == 422, refused.text
    theirs = running.agent("billing-bot").post(
        "/v1/actions", json=action(agent="billing-bot", approval_id=approval["id"])
    )
    assert theirs.status_code == 422 and theirs.json()["error"]["code"] == "unknown_approval"
    with admin(running) as client:
        events = trail(client, event="action.recorded")
        chain = trail(client, target="006XYZ")
    assert len(events) == 1
    event = events[0]
    assert event["actor"] == "agent:lead-router" and event["object_type"] == "action"
    assert event["object_id"] == recorded["id"] and event["agent"] == "lead-router" and event["target_id"] == "006XYZ"
    assert event["after"] == {"action": "lead.update_owner", "changes": action()["changes"]}
    assert event["source"] == {
        "agent": "lead-router",
        "run_id": "run-7",
        "version": "v3",
        "approval_id": approval["id"],
        "customer": None,
    }
    told = [e["event"] for e in chain]
    assert told[-1] == "approval.requested" and "action.recorded" in told, "the target's chain joins both"


def test_a_replay_without_an_approval_id_hashes_as_before(running: Running) -> None:
    """Actions recorded before approval_id existed are still matched by their replays."""
    body = ActionIn.model_validate(action(dedup_key="k"))
    legacy = body.model_dump(mode="json", exclude={"by_human", "by"})  # fields newer still (shadow mode)
    del legacy["version"], legacy["approval_id"]
    from bot.approvals.records import sha256_of

    assert runs.action_sha256(body) == sha256_of(legacy)


def test_undo_claims_and_finishes_are_filed_under_the_target(db: Database) -> None:
    data = config_dict()
    data["agents"]["lead-router"]["control_url"] = "http://127.0.0.1:9/hook"
    config = parse_config(data)
    clock = ManualClock(T0)
    with db.transaction() as session:
        done, _ = runs.record_action(session, config=config, request=ActionIn.model_validate(action()), now=clock.now())
    for error in ("HTTP 500", None):
        with db.transaction() as session:
            claimed = undo.claim_undo(
                session, action_id=done.id, agent_id="lead-router", user_id="U0OWNER", now=clock.now()
            )
            assert claimed is not None
        with db.transaction() as session:
            undo.finish_undo(
                session,
                action_id=done.id,
                agent_id="lead-router",
                user_id="U0OWNER",
                claimed_at=clock.now(),
                error=error,
                now=clock.now(),
            )
    with db.transaction() as session:
        chain = Audit(session).newest(before_id=None, limit=10, target_id="00Q1")
        assert [(e.event, e.actor, e.agent) for e in chain] == [
            ("action.undone", "user:U0OWNER", "lead-router"),
            ("action.undo_claimed", "user:U0OWNER", "lead-router"),
            ("action.undo_failed", "user:U0OWNER", "lead-router"),
            ("action.undo_claimed", "user:U0OWNER", "lead-router"),
            ("action.recorded", "agent:lead-router", "lead-router"),
        ]
        assert chain[1].after == {"restore": {"OwnerId": "005A"}} and chain[1].object_id == done.id


def test_dead_outbox_rows_are_filed_under_their_agent_and_target(running: Running) -> None:
    approval = ask(running)
    rows = Rows(running.services.db, running.clock)
    callback = outbound.WebhookPayload(url="https://agents.example/hooks/x", agent="lead-router", body={"event": "x"})
    rows.fail(Row(9001, outbound.Kind.WEBHOOK, approval["id"], callback, 0), "HTTP 500", None, permanent=True)
    note = outbound.Undid(agent="billing-bot", by="U0OWNER", done=1, tried=1, skipped=0)
    post = outbound.PostPayload(channel="C0BILLING", note=note)
    rows.fail(Row(9002, outbound.Kind.POST, None, post, 9), "channel_not_found", None, permanent=False)
    with admin(running) as client:
        dead = {e["object_id"]: e for e in trail(client) if e["event"].endswith(".dead")}
    assert dead[approval["id"]]["agent"] == "lead-router" and dead[approval["id"]]["target_id"] == "006XYZ"
    assert dead["C0BILLING"]["agent"] == "billing-bot" and dead["C0BILLING"]["target_id"] is None


# --- handrail audit export / verify ---------------------------------------------------------------


@pytest.fixture
def seeded(db: Database) -> Iterator[tuple[Database, list[int]]]:
    made = []
    for i in range(40):
        made.append(
            record(
                db,
                T0 + timedelta(minutes=i),
                agent="lead-router" if i % 4 else "billing-bot",
                actor="user:U0OWNER",
                reason={5: '=HYPERLINK("https://evil.example")', 6: "'quoted", 7: "", 8: 'a,b\n"c"'}.get(i),
                after={"i": i, "text": "é\u202e\n"},
                evidence=[{"label": "x", "url": "https://docs.example/x"}] if i == 9 else None,
            )
        )
    yield db, made


RANGE = ("--since", (T0 + timedelta(minutes=2)).isoformat(), "--until", (T0 + timedelta(minutes=30)).isoformat())


def export(tmp_path: Path, url: str, *args: str) -> str:
    result = run_handrail("audit", "export", *args, cwd=tmp_path, DATABASE_URL=url)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


def test_export_writes_json_lines_oldest_first_that_read_back(
    tmp_path: Path, database_url: str, seeded: tuple[Database, list[int]]
) -> None:
    db, made = seeded
    lines = export(tmp_path, database_url, *RANGE).splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == made[2:30], "--since included, --until excluded, oldest first"
    assert events[3]["reason"] == '=HYPERLINK("https://evil.example")' and events[3]["after"]["text"] == "é\u202e\n"
    assert events[0]["at"] == "2026-11-02T10:02:00Z"
    theirs = [json.loads(line) for line in export(tmp_path, database_url, "--agent", "billing-bot").splitlines()]
    assert [e["id"] for e in theirs] == made[::4] and {e["agent"] for e in theirs} == {"billing-bot"}
    out = tmp_path / "trail.jsonl"
    assert export(tmp_path, database_url, *RANGE, "--out", str(out)) == "", "quiet in a pipe"
    assert out.read_text(encoding="utf-8").splitlines() == lines
    ok = run_handrail("audit", "verify", str(out), *RANGE, cwd=tmp_path, DATABASE_URL=database_url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 28 events from 2026-11-02T10:02:00Z") and "not hash-chained" in ok.stdout


def test_export_writes_csv_that_a_spreadsheet_cannot_run_and_that_reads_back(
    tmp_path: Path, database_url: str, seeded: tuple[Database, list[int]]
) -> None:
    db, made = seeded
    text = export(tmp_path, database_url, "--format", "csv", *RANGE)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["id"]) for r in rows] == made[2:30]
    by_id = {int(r["id"]): r for r in rows}
    assert by_id[made[5]]["reason"] == '\'=HYPERLINK("https://evil.example")', "a formula is shown, never run"
    assert by_id[made[6]]["reason"] == "''quoted" and by_id[made[8]]["reason"] == 'a,b\n"c"'
    assert json.loads(by_id[made[9]]["evidence"]) == [{"label": "x", "url": "https://docs.example/x"}]
    assert json.loads(by_id[made[3]]["after"]) == {"i": 3, "text": "é\u202e\n"} and by_id[made[3]]["before"] == ""
    out = tmp_path / "trail.csv"
    out.write_text(text, encoding="utf-8", newline="")
    ok = run_handrail("audit", "verify", str(out), *RANGE, cwd=tmp_path, DATABASE_URL=database_url)
    assert ok.returncode == 0, ok.stderr


def test_verify_finds_a_missing_an_altered_and_an_extra_event(
    tmp_path: Path, database_url: str, seeded: tuple[Database, list[int]]
) -> None:
    db, made = seeded
    lines = export(tmp_path, database_url, *RANGE).splitlines()
    altered = json.loads(lines[4]) | {"reason": "nothing to see"}
    extra = json.loads(lines[0]) | {"id": made[-1] + 100}
    for name, changed, problem in (
        ("missing", lines[:10] + lines[11:], f"event {made[12]} is in the database but not in the file"),
        (
            "altered",
            lines[:4] + [json.dumps(altered)] + lines[5:],
            f"event {made[6]} differs from the database in reason",
        ),
        (
            "extra",
            [*lines, json.dumps(extra)],
            f"event {made[-1] + 100} is in the file but not in the database's range",
        ),
        ("reordered", [lines[1], lines[0], *lines[2:]], "ids must increase"),
    ):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(changed) + "\n", encoding="utf-8")
        result = run_handrail("audit", "verify", str(path), *RANGE, cwd=tmp_path, DATABASE_URL=database_url)
        assert result.returncode == 2 and problem in result.stderr, (name, result.stderr)
    # An event recorded in the range after the export is missing from it.
    whole = tmp_path / "whole.jsonl"
    whole.write_text("\n".join(lines) + "\n", encoding="utf-8")
    record(db, T0 + timedelta(minutes=20, seconds=30))
    late = run_handrail("audit", "verify", str(whole), *RANGE, cwd=tmp_path, DATABASE_URL=database_url)
    assert late.returncode == 2 and "in the database but not in the file" in late.stderr


def test_the_audit_commands_refuse_what_they_cannot_use(tmp_path: Path, database_url: str, db: Database) -> None:
    for args, words in (
        (("export", "--since", "soon"), "--since 'soon'"),
        (("export", "--until", "2026-11-02T10:00:00"), "time zone"),
        (("export", "--since", "2026-11-03T00:00:00Z", "--until", "2026-11-02T00:00:00Z"), "before"),
        (("export", "--out", str(tmp_path / "no" / "such" / "dir.jsonl")), "--out"),
        (("verify", str(tmp_path / "absent.jsonl")), "absent.jsonl"),
    ):
        result = run_handrail("audit", *args, cwd=tmp_path, DATABASE_URL=database_url)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n", encoding="utf-8")
    result = run_handrail("audit", "verify", str(garbage), cwd=tmp_path, DATABASE_URL=database_url)
    assert result.returncode == 2 and "line 1 is not JSON" in result.stderr
    empty = run_handrail("audit", "export", cwd=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}")
    assert empty.returncode == 2 and "handrail migrate" in empty.stderr and "Traceback" not in empty.stderr
