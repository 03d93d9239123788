"""What Handrail writes to its log: `handrail web` and `handrail worker` run as subprocesses and their
stderr is read. Paths go without query strings, personal data and secrets are masked in every
record, SQL errors carry no row values, APScheduler keeps quiet, and a failing delivery is reported
at its first failure and when it recovers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot import logs
from bot.app import RequestIds
from bot.approvals.create import create as create_approval
from bot.config import load_config, load_settings
from local.slack import FakeSlack
from storage.db import Database, migrate
from tests import slackreq
from tests.helpers import (
    AGENT_TOKENS,
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    AgentEndpoint,
    Running,
    ask,
    click,
    posted_card,
    request,
    run_handrail,
)
from tests.samples import REQUEST
from tests.servers import Process, free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = AGENT_TOKENS["lead-router"]
BOT_TOKEN = "xoxb-1111-2222-secretbottoken"
LEVELS = ("DEBUG ", "INFO ", "WARNING ", "ERROR ", "CRITICAL ")


def environment(tmp_path: Path, config_file: Path, slack: FakeSlack, redis_url: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HANDRAIL_", "DATABASE_"))}
    return inherited | {
        "HANDRAIL_CONFIG": str(config_file),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'handrail.db'}",
        "REDIS_URL": redis_url,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.base_url,
        "HANDRAIL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "HANDRAIL_SWEEP_INTERVAL": "0.2",
    }


@pytest.fixture
def web(tmp_path: Path, config_file: Path, slack: FakeSlack, redis_url: str) -> Iterator[tuple[Process, str]]:
    port = free_port()
    server = Process("web", environment(tmp_path, config_file, slack, redis_url) | {"PORT": str(port)})
    try:
        server.wait_for("Uvicorn running on")
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def assert_one_format(log: str) -> None:
    """Every line is a record of the one setup: `LEVEL logger: message` (and no traceback)."""
    lines = [line for line in log.splitlines() if line]
    assert lines and all(line.startswith(LEVELS) for line in lines), log


def test_web_logs_paths_without_query_strings_and_no_personal_data_or_tokens(
    web: tuple[Process, str], slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    server, url = web
    agent = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    gate = agent.get("/v1/agents/lead-router/gate", params={"customer": "jane.doe@example.com", "run_id": "run-7"})
    assert gate.status_code == 200
    callback = f"{agent_endpoint.url}?token=cb-secret-123"
    created = agent.post("/v1/approvals", json=REQUEST | {"callback_url": callback})
    assert created.status_code == 201, created.text
    post = posted_card(slack)
    body = slackreq.block_action(
        user_id="U0REVIEWER",
        action_id="approval.approve",
        value=created.json()["id"],
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
    )
    signed = slackreq.sign(body, SIGNING_SECRET, int(time.time()))
    assert httpx.post(f"{url}/slack/events", content=body, headers=signed).status_code == 200
    agent_endpoint.wait_for(1)
    server.wait_for("HTTP Request: POST")

    log = server.stop()
    assert '"GET /v1/agents/lead-router/gate HTTP/1.1" 200' in log  # the access log, without the query
    assert f'HTTP Request: POST {agent_endpoint.url} "HTTP/1.0 200 OK"' in log  # httpx, without the query
    for leak in ("jane.doe", "example.com", "%40", "customer=", "run_id=", "cb-secret-123", "token=", TOKEN, BOT_TOKEN):
        assert leak not in log, (leak, log)
    assert "apscheduler" not in log  # sweeps ran every 0.2 s; APScheduler said nothing about them
    assert_one_format(log)


def test_the_worker_logs_through_the_same_setup_and_apscheduler_keeps_quiet(
    tmp_path: Path, config_file: Path, slack: FakeSlack, redis_url: str
) -> None:
    env = environment(tmp_path, config_file, slack, redis_url)
    db = Database(env["DATABASE_URL"])
    migrate(db.engine)
    with db.transaction() as session:  # asked 16 minutes ago: the primary owner's step is due
        create_approval(
            session, config=load_config(config_file), request=request(), now=datetime.now(UTC) - timedelta(minutes=16)
        )
    db.dispose()
    # The owner's DM, which a sweep queues, fails at its first try (its link to the card).
    slack.fail_next("chat.getPermalink", "internal_error")
    worker = Process("worker", env)
    try:
        worker.wait_for("dm for apr_")
    finally:
        log = worker.stop()
    assert "failed, retrying in 5s (up to 10 attempts): internal_error" in log
    assert "apscheduler" not in log and "Running job" not in log and "executed successfully" not in log
    assert BOT_TOKEN not in log
    assert_one_format(log)


SCRIPT = """
import logging, sys
from bot import logs

logs.configure(log_format=sys.argv[1])
log = logging.getLogger("handrail.anything")
log.warning("agent sent Authorization: Bearer %s", "tok-lead-router-1")
log.warning("slack tokens %s %s %s", "xoxb-1234-5678-abcdefgh", "xoxp-1234-abcd", "xapp-1-A0-123-abc")
log.warning("slack signature %s; callback signature %s", "v0=" + "ab" * 32, "v1=" + "cd" * 32)
log.warning("customer %s, call %s or %s", "jane.doe@example.com", "+44 20 7946 0958", "(555) 123-4567")
log.warning("settings %s", {"signing_secret": "s3cr3t", "password": "hunter 2"})
try:
    raise ValueError("https://bob:hunter2@agent.example/hook?token=cb-secret-123 refused jane.doe@example.com")
except ValueError:
    log.exception("delivery failed")
log.info("run %s at 2026-11-02 10:30:00 from 10.0.0.1 took 2560 s; ts 1730541600.000100", "run-42")
with logs.request_scope("abc-123"):
    log.warning(
        "fields",
        extra={
            "approval_id": "apr_1",
            "customer": "jane.doe@example.com",
            "settings": {"signing_secret": "s3cr3t", "hosts": ["https://bob:hunter2@agent.example/x"]},
            "token": "tok-lead-router-1",
            "attempts": 2,
            "ts": "1730541600.000100",
        },
    )
"""


def masked(log_format: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, log_format], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    log = result.stderr
    assert result.returncode == 0, log
    for leak in (
        "tok-lead-router-1",
        "xoxb-1234",
        "xoxp-1234",
        "xapp-1",
        "ab" * 32,
        "cd" * 32,
        "jane.doe",
        "7946",
        "123-4567",
        "s3cr3t",
        "hunter",
        "cb-secret-123",
    ):
        assert leak not in log, (leak, log)
    return log


def test_every_record_is_masked_whoever_logs_it() -> None:
    log = masked("text")
    assert "WARNING handrail.anything: agent sent Authorization: [redacted] [redacted]" in log
    assert "customer [email], call [phone] or [phone]" in log
    assert "ValueError: https://[redacted]@agent.example/hook refused [email]" in log  # the traceback too
    # What is neither personal nor secret stays readable.
    assert (
        "INFO handrail.anything: run run-42 at 2026-11-02 10:30:00 from 10.0.0.1 took 2560 s; ts 1730541600.000100"
        in log
    )
    assert "WARNING handrail.anything: fields request_id=abc-123\n" in log  # a terminal's line: no fields


def test_json_lines_are_masked_in_every_field_and_the_traceback() -> None:
    records = [json.loads(line) for line in masked("json").splitlines()]  # one JSON object a line
    assert [r["message"] for r in records] == [
        "agent sent Authorization: [redacted] [redacted]",
        "slack tokens [redacted] [redacted] [redacted]",
        "slack signature [redacted]; callback signature [redacted]",
        "customer [email], call [phone] or [phone]",
        "settings {'signing_secret': [redacted], 'password': [redacted]}",
        "delivery failed",
        "run run-42 at 2026-11-02 10:30:00 from 10.0.0.1 took 2560 s; ts 1730541600.000100",
        "fields",
    ]
    for record in records:
        assert list(record)[:4] == ["ts", "level", "logger", "message"]
        assert datetime.fromisoformat(record["ts"]).utcoffset() == timedelta(0)
    failed = records[5]
    assert failed["level"] == "ERROR" and failed["logger"] == "handrail.anything"
    assert failed["traceback"].startswith("Traceback (most recent call last):\n")
    assert failed["traceback"].endswith("ValueError: https://[redacted]@agent.example/hook refused [email]")
    assert "request_id" not in failed  # none in scope
    assert records[7] == records[7] | {
        "level": "WARNING",
        "request_id": "abc-123",
        "approval_id": "apr_1",
        "customer": "[email]",
        "settings": {"signing_secret": "[redacted]", "hosts": ["https://[redacted]@agent.example/x"]},
        "token": "[redacted]",
        "attempts": 2,
        "ts_": "1730541600.000100",  # a field named like the line's own keeps its value under another name
    }


def test_a_terminal_gets_text_and_anything_else_json_unless_handrail_log_format_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert logs.chosen_format(None) == "text"
    assert logs.chosen_format("json") == "json"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert logs.chosen_format(None) == "json"
    assert logs.chosen_format("text") == "text"
    assert logs.config(log_format="text")["handlers"]["stderr"]["formatter"] == "text"
    for value, chosen in (("json", "json"), (" Text ", "text"), ("", None)):
        monkeypatch.setenv("HANDRAIL_LOG_FORMAT", value)
        assert load_settings(env_file=None).handrail_log_format == chosen


def test_a_log_format_handrail_does_not_know_stops_the_start(tmp_path: Path) -> None:
    result = run_handrail("web", cwd=tmp_path, HANDRAIL_LOG_FORMAT="yaml")
    assert result.returncode == 2
    assert result.stderr.startswith('handrail: HANDRAIL_LOG_FORMAT: "yaml" is not json or text: write'), result.stderr


SQL_ERROR = """
import logging, sys
from sqlalchemy import text
from bot import logs
from storage.db import Database

logs.configure(log_format="text")
db = Database(sys.argv[1])
try:
    with db.transaction() as session:
        session.execute(
            text("INSERT INTO approvals (id, agent, summary) VALUES (:id, NULL, :summary)"),
            {"id": "apr_1", "summary": "refund Jane Doe"},
        )
except Exception:
    logging.getLogger("handrail.anything").exception("could not store the request")
"""


def test_sql_errors_are_logged_without_the_rows_values(database_url: str) -> None:
    db = Database(database_url)
    migrate(db.engine)
    db.dispose()
    result = subprocess.run(
        [sys.executable, "-c", SQL_ERROR, database_url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    log = result.stderr
    assert "ERROR handrail.anything: could not store the request" in log and "IntegrityError" in log, log
    assert "[SQL parameters hidden due to hide_parameters=True]" in log
    assert "Jane Doe" not in log and "apr_1" not in log


def outbox_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.outbox" and r.levelno == logging.WARNING]


def test_a_failing_slack_delivery_warns_at_its_first_failure_and_when_it_recovers(
    running: Running, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.outbox")
    slack.fail_next("chat.postMessage", "internal_error", times=2)
    created = ask(running)
    running.deliver_due()  # waits for the pass the request started: the first try failed
    [first] = outbox_warnings(caplog)
    assert "card for " + created["id"] in first and "internal_error" in first and "retrying in 5s" in first

    running.clock.advance(timedelta(seconds=5))
    running.deliver_due()  # the second failure adds nothing
    assert outbox_warnings(caplog) == [first]

    running.clock.advance(timedelta(seconds=10))
    running.deliver_due()
    posted_card(slack)
    [recovered] = outbox_warnings(caplog)[1:]
    assert recovered.endswith(f"card for {created['id']} delivered after 2 failed attempts")


def test_a_failing_callback_warns_at_its_first_failure_and_when_it_recovers(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.outbox")
    created = ask(running, callback_url=agent_endpoint.url)
    agent_endpoint.statuses = [500]
    assert click(running, posted_card(slack), "U0REVIEWER", "approval.approve", created["id"]).status_code == 200
    agent_endpoint.wait_for(1)
    running.deliver_due()
    [first] = [w for w in outbox_warnings(caplog) if "webhook" in w]
    assert f"webhook for {created['id']} failed, retrying in 5s" in first and "HTTP 500" in first

    running.clock.advance(timedelta(seconds=5))
    running.deliver_due()
    agent_endpoint.wait_for(2)
    assert [w for w in outbox_warnings(caplog) if "webhook" in w][1:] == [
        f"outbox {first.split()[1]} webhook for {created['id']} delivered after 1 failed attempts"
    ]


# --- the request id ------------------------------------------------------------------------------


def test_one_request_id_follows_an_approval_from_the_api_to_its_card_decision_and_callback(
    tmp_path: Path, config_file: Path, slack: FakeSlack, redis_url: str, agent_endpoint: AgentEndpoint
) -> None:
    port, url = free_port(), ""
    # HANDRAIL_LOG_FORMAT empty is unset: stderr is a pipe, so JSON lines, as in production.
    env = environment(tmp_path, config_file, slack, redis_url) | {"PORT": str(port), "HANDRAIL_LOG_FORMAT": ""}
    server = Process("web", env)
    try:
        server.wait_for("Uvicorn running on")
        url = f"http://127.0.0.1:{port}"
        agent = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        created = agent.post(
            "/v1/approvals", json=REQUEST | {"callback_url": agent_endpoint.url}, headers={"X-Request-Id": "abc-123"}
        )
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"] == "abc-123"
        approval_id = created.json()["id"]
        post = posted_card(slack)
        body = slackreq.block_action(
            user_id="U0REVIEWER",
            action_id="approval.approve",
            value=approval_id,
            channel_id=post.response["channel"],
            message_ts=post.response["ts"],
        )
        clicked = httpx.post(
            f"{url}/slack/events", content=body, headers=slackreq.sign(body, SIGNING_SECRET, int(time.time()))
        )
        assert clicked.status_code == 200
        slack_request_id = clicked.headers["x-request-id"]  # Slack sends none: a new one
        assert re.fullmatch(r"[0-9a-f]{32}", slack_request_id)
        [hook] = agent_endpoint.wait_for(1)
        assert {name.lower(): value for name, value in hook.headers.items()}["x-request-id"] == "abc-123"
        server.wait_for("callback approval.approved for")
        # An answer given at the door (no token, so before the body is read) carries one too.
        refused = httpx.post(f"{url}/v1/approvals", json=REQUEST, headers={"X-Request-Id": "door-1"})
        assert (refused.status_code, refused.headers["x-request-id"]) == (401, "door-1")
        for hostile in ("<script>alert(1)</script>", "x" * 65, "abc-123 def", "abc-123;x"):
            answer = httpx.get(f"{url}/healthz", headers={"X-Request-Id": hostile})
            assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"]), hostile
    finally:
        log = server.stop()

    records = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert all(datetime.fromisoformat(r["ts"]).utcoffset() == timedelta(0) for r in records)
    for hostile in ("<script>", "x" * 65, "abc-123 def", "abc-123;x"):
        assert hostile not in log
    followed = [r for r in records if r.get("request_id") == "abc-123"]
    lines = {(r["logger"], r["message"]) for r in followed}
    accepted = f"approval {approval_id} requested by lead-router for {REQUEST['action']}: pending"
    assert ("bot.api", accepted) in lines  # the request
    assert any(logger == "uvicorn.access" and '"POST /v1/approvals HTTP/1.1" 201' in m for logger, m in lines)
    assert ("bot.outbox", f"card for {approval_id} posted in {post.response['channel']}") in lines
    assert ("bot.flows", f"approval {approval_id}: approve by U0REVIEWER, now approved") in lines  # the decision
    assert ("bot.outbox", f"card for {approval_id} updated: approved") in lines
    assert ("bot.outbox", f"callback approval.approved for {approval_id} delivered") in lines
    about = [r for r in followed if r["logger"] in ("bot.api", "bot.outbox", "bot.flows")]
    assert len(about) == 5 and all(r["approval_id"] == approval_id and r["level"] == "INFO" for r in about)
    # The click's own access line carries the click's id; the decision it made carries the approval's.
    [click_line] = [r for r in records if r["logger"] == "uvicorn.access" and "/slack/events" in r["message"]]
    assert click_line["request_id"] == slack_request_id
    [door] = [r for r in records if r.get("request_id") == "door-1"]
    assert door["logger"] == "uvicorn.access" and door["message"].endswith('"POST /v1/approvals HTTP/1.1" 401')
    # No personal data or reviewer text on the way: the request's summary and target are not logged.
    assert REQUEST["summary"] not in log and REQUEST["target"]["id"] not in log


@pytest.mark.parametrize(
    "given", ["x" * 65, "abc\ndef", "abc\r\nX-Evil: 1", "<script>alert(1)</script>", "", "a b", "é"]
)
def test_a_request_id_that_is_not_well_formed_is_replaced_and_never_echoed(given: str) -> None:
    seen, sent = serve_once([(b"x-request-id", given.encode())])
    [header] = [value for name, value in sent["headers"] if name == b"x-request-id"]
    assert re.fullmatch(rb"[0-9a-f]{32}", header) and seen == [header.decode()]
    assert logs.current_request_id() is None  # in scope only while the request is served


@pytest.mark.parametrize("given", ["abc-123", "a" * 64, "req:1.2_3", "550e8400-e29b-41d4-a716-446655440000"])
def test_a_well_formed_request_id_is_kept_and_sent_back(given: str) -> None:
    seen, sent = serve_once([(b"x-request-id", given.encode())])
    assert seen == [given] and (b"x-request-id", given.encode()) in sent["headers"]
    assert serve_once([])[0] != serve_once([])[0]  # without one, each request gets its own


def serve_once(headers: list[tuple[bytes, bytes]]) -> tuple[list[str | None], dict[str, Any]]:
    """One request through RequestIds: the request id the app saw in scope, and the response's start."""
    seen: list[str | None] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(logs.current_request_id())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": headers}
    asyncio.run(RequestIds(app)(scope, receive, send))
    return seen, sent[0]


class Records(logging.Handler):
    """What the one setup's filter leaves of each record, kept in a list."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(logs.Redact())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    handler, root = Records(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_callback_retried_later_logs_with_its_approvals_request_id(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint, records: list[logging.LogRecord]
) -> None:
    answer = running.agent().post(
        "/v1/approvals", json=REQUEST | {"callback_url": agent_endpoint.url}, headers={"X-Request-Id": "trace-7"}
    )
    approval_id = answer.json()["id"]
    agent_endpoint.statuses = [500]
    assert click(running, posted_card(slack), "U0REVIEWER", "approval.approve", approval_id).status_code == 200
    agent_endpoint.wait_for(1)
    running.deliver_due()
    running.clock.advance(timedelta(seconds=5))
    running.deliver_due()  # a pass started by nobody's request: the approval's id comes from its row
    [hook] = agent_endpoint.wait_for(2)[1:]
    assert {name.lower(): value for name, value in hook.headers.items()}["x-request-id"] == "trace-7"
    about = {r.getMessage(): r.__dict__.get("request_id") for r in records if r.name.startswith("bot.")}
    failed = next(m for m in about if m.startswith("outbox ") and f"webhook for {approval_id} failed" in m)
    recovered = next(m for m in about if m.endswith(f"webhook for {approval_id} delivered after 1 failed attempts"))
    assert about[failed] == about[recovered] == "trace-7"
    assert about[f"callback approval.approved for {approval_id} delivered"] == "trace-7"
