"""The demo of local mode: demo.yml and its people file, and the demo agent played against the real
server (real Redis, SQLite, the fake Slack filled from demo_people.yml), asserting what a newcomer
sees: cards for the human decisions and none for the auto one, actions and runs recorded, an undo
preview that goes through the demo's control hook, a pause that holds the agent, an escalation."""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from sqlalchemy import select

from bot.clock import ManualClock
from bot.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, agent_key, sign
from local.demo import CONFIG_PATH, DEMO_TOKENS, PEOPLE_PATH, DemoFailed, demo_control_router, run_demo
from storage.tables import ActionRecord, Approval, Run
from tests import slackreq
from tests.helpers import WEBHOOK_SECRET, Running, card_of, click, handrail_env, run_handrail, wait_calls

PACE = 0.05  # the story's 2 s steps take 0.1 s; a reassignment every second once it is told


def people() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(PEOPLE_PATH.read_text())
    return data


# --- the files --------------------------------------------------------------------------------------


def test_the_demo_config_passes_config_check_without_warnings(tmp_path: Path) -> None:
    checked = run_handrail("config-check", str(CONFIG_PATH), cwd=tmp_path)
    assert checked.returncode == 0 and checked.stderr == ""
    assert checked.stdout.startswith("ok: 2 agents (lead-router, billing-bot)")
    config = yaml.safe_load(CONFIG_PATH.read_text())
    for agent_id, token in DEMO_TOKENS.items():
        assert config["agents"][agent_id]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
        assert token.startswith("demo-"), "a token anyone can read says it is for the demo"


def test_the_people_file_names_every_user_group_and_channel_of_the_config() -> None:
    text = CONFIG_PATH.read_text()
    used = set(re.findall(r"\b[UWS][A-Z0-9]{2,}\b|\bC0[A-Z0-9]+\b", yaml.safe_dump(yaml.safe_load(text))))
    who = people()
    named = set(who["users"]) | set(who["usergroups"]) | set(who["channels"])
    assert used and used <= named, used - named
    for user in who["users"].values():
        assert user["name"] and user["is"]
    for group in who["usergroups"].values():
        assert group["name"] and group["members"] and set(group["members"]) <= set(who["users"])
    assert {f"#{c['name']}" for c in who["channels"].values()} == {"#deal-desk", "#billing-ops"}


# --- the demo agent against the real server ------------------------------------------------------------


@pytest.fixture
def control(clock: ManualClock) -> Iterator[tuple[str, list[str]]]:
    """The demo's control hook on a loopback port, holding signatures to the server's clock: its
    origin, and the lines it logs."""
    lines: list[str] = []
    app = FastAPI()
    app.include_router(demo_control_router(WEBHOOK_SECRET, now=lambda: clock.now().timestamp(), log=lines.append))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", lines
    server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture
def config_file(tmp_path: Path, control: tuple[str, list[str]]) -> Path:
    """demo.yml as it is, but for the control hooks, which point at the `control` fixture, and the
    rate limits: the server's clock stands still here, so a one-second window would never end."""
    data = yaml.safe_load(CONFIG_PATH.read_text())
    del data["limits"]
    for agent_id, agent in data["agents"].items():
        agent["control_url"] = f"{control[0]}/local/demo/control/{agent_id}"
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def running(running: Running) -> Running:
    """The server, its fake Slack knowing the demo's people and user groups as local mode's does."""
    who = people()
    for user_id, user in who["users"].items():
        running.slack.users[user_id] = {"real_name": user["name"]}
    for group_id, group in who["usergroups"].items():
        running.slack.usergroup_members[group_id] = list(group["members"])
    return running


class Demo:
    """run_demo on an event loop of its own thread, as `handrail demo` runs beside the server."""

    def __init__(self, url: str) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(run_demo(url, pace=PACE, log=self._say))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.task)
        except BaseException as error:  # kept for the test to look at, cancellation included
            self.error = error
        with self._changed:
            self._changed.notify_all()

    def _say(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 30) -> list[str]:
        """The lines holding `text`, once there are `count` of them."""

        def found() -> list[str]:
            return [line for line in self.lines if text in line]

        with self._changed:
            if not self._changed.wait_for(lambda: len(found()) >= count or self.error is not None, timeout):
                raise AssertionError(f"no {count} × {text!r} in the demo's log:\n" + "\n".join(self.lines))
            assert self.error is None, f"the demo ended: {self.error!r}"
            return found()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(30)
        self.loop.close()


def rows(running: Running, table: type[Any], where: Callable[[Any], bool] = lambda row: True) -> list[Any]:
    with running.services.db.transaction() as session:
        return [row for row in session.scalars(select(table)) if where(row)]


def cards(running: Running) -> dict[str, list[dict[str, Any]]]:
    """The cards Slack took, by channel: top-level messages with blocks."""
    found: dict[str, list[dict[str, Any]]] = {}
    for call in running.slack.calls_to("chat.postMessage"):
        if call.response.get("ok") and "thread_ts" not in call.params and "blocks" in call.params:
            found.setdefault(call.params["channel"], []).append(call.params | {"ts": call.response["ts"]})
    return found


def slash(running: Running, text: str, user: str) -> None:
    """`/agent <text>` as Slack sends it; the demo's log shows what it did."""
    response = running.slack_post(slackreq.slash_command(text=text, user_id=user))
    assert response.status_code == 200, response.text


def sweep(running: Running) -> None:
    running.call(running.services.sweeper.sweep)
    running.deliver_due()


@pytest.fixture
def demo(running: Running) -> Iterator[Demo]:
    played = Demo(running.url)
    yield played
    played.stop()


def test_a_newcomer_sees_cards_an_undo_preview_a_pause_that_holds_and_an_escalation(
    running: Running, demo: Demo, control: tuple[str, list[str]]
) -> None:
    slack = running.slack
    demo.wait_for("asked for approval of a $250 service credit for Hooli")
    assert demo.wait_for("a 25% discount on Acme's renewal: waiting for 2 approvers (Deal desk) in #deal-desk")
    assert demo.wait_for("$1,200 refund to Globex is for a person only: Handrail posted it as a task in #billing-ops")
    running.deliver_due()
    posted = cards(running)
    assert len(posted["C0DEALDESK"]) == 2 and len(posted["C0BILLINGOPS"]) == 2, posted.keys()
    discount = next(c for c in posted["C0DEALDESK"] if "25% discount" in json.dumps(c["blocks"]))
    stage = next(c for c in posted["C0DEALDESK"] if "Initech" in json.dumps(c["blocks"]))
    assert "0 of 2 approvals" in json.dumps(discount["blocks"])
    assert any("Task for a person: refund.issue" in json.dumps(c["blocks"]) for c in posted["C0BILLINGOPS"])

    # The small reassignments: approved by the policy, carded nowhere, claimed and recorded.
    demo.wait_for("lead-router: reassigned 1 lead", count=3)
    auto = rows(running, Approval, lambda a: a.action == "lead.reassign")
    assert len(auto) >= 3 and all(a.status == "approved" and a.decision_code == "auto" and a.executed_at for a in auto)
    assert "lead.reassign" not in json.dumps([c.params for c in slack.calls_to("chat.postMessage")])
    recorded = rows(running, ActionRecord, lambda a: a.agent == "lead-router")
    assert len(recorded) >= 3 and all(a.changes[0]["field"] == "Owner" and a.changes[0]["before"] for a in recorded)

    # Runs: an hour of successes, then the failure spike.
    demo.wait_for("reported 6 failed runs in a row")
    runs = rows(running, Run, lambda r: r.agent == "lead-router")
    assert sum(r.status == "failed" for r in runs) == 6 and sum(r.status == "succeeded" for r in runs) >= 24
    running.call(running.services.evaluator.evaluate_all)
    running.deliver_due()
    [alert] = [c for c in cards(running)["C0DEALDESK"] if "failure rate above 5%" in json.dumps(c["blocks"])]
    shown = json.dumps(alert["blocks"], ensure_ascii=False)
    assert re.search(r"\*6 of \d+ runs failed in the last hour", shown) and "Salesforce API timed out" in shown, shown
    assert any("failure rate above 5%" in json.dumps(c["blocks"]) for c in cards(running).get("U0PRIYA", []))

    # The first approver of the first agent decides a one-approver card with one click.
    click(running, _call(running, stage), "U0PRIYA", "approval.approve", _approval_id(running, "Initech"))
    demo.wait_for("moving Initech's expansion to Closed Won was approved by Priya Shah")
    demo.wait_for("done: moving Initech's expansion to Closed Won")

    # /agent undo previews the recorded writes, and the demo's hook confirms the undo.
    slash(running, "undo lead-router 3", "U0PRIYA")
    [opened] = wait_calls(slack, "views.open", 1)
    view = opened.params["view"]
    assert (
        view["submit"]["text"] == "Undo 3"
        and json.dumps(view["blocks"], ensure_ascii=False).count("restores Owner →") >= 2
    )
    body = slackreq.view_submission(
        user_id="U0PRIYA", callback_id="control.undo", private_metadata=view["private_metadata"], values={}
    )
    running.slack_post(body)
    [result] = wait_calls(slack, "views.update", 1)
    assert "Undid 3 of 3" in json.dumps(result.params["view"])
    assert sum(line.startswith("lead-router platform: undid act_") for line in control[1]) == 3

    # A pause holds the agent: nothing is written, not even what people approve meanwhile.
    slash(running, "pause lead-router checking the routing rules", "U0PRIYA")
    demo.wait_for("lead-router: paused by Priya Shah, waiting")
    written = len(rows(running, ActionRecord))
    for approver, approvals in (("U0DIEGO", 1), ("U0GRACE", 2)):
        click(running, _call(running, discount), approver, "approval.approve", _approval_id(running, "Acme"))
        wait_calls(slack, "chat.update", approvals)
    demo.wait_for("a 25% discount on Acme's renewal was approved by Diego Alvarez and Grace Kim")
    demo.wait_for("lead-router: paused by Priya Shah, waiting", count=2)
    [acme] = rows(running, Approval, lambda a: a.action == "quote.discount")
    assert acme.status == "approved" and acme.executed_at is None and len(rows(running, ActionRecord)) == written

    slash(running, "resume lead-router", "U0PRIYA")
    demo.wait_for("done: a 25% discount on Acme's renewal")
    [acme] = rows(running, Approval, lambda a: a.action == "quote.discount")
    assert acme.executed_at is not None

    # Nobody at billing answers the credit: it escalates to its owners, then expires closed.
    credit = next(c for c in posted["C0BILLINGOPS"] if "Hooli" in json.dumps(c["blocks"]))
    running.clock.advance(timedelta(minutes=1, seconds=5))
    sweep(running)
    assert any(c.params["channel"] == "U0OMAR" for c in slack.calls_to("chat.postMessage"))
    assert "Escalated to <@U0OMAR>" in json.dumps(card_of(slack, _call(running, credit))["blocks"])
    running.clock.advance(timedelta(minutes=10))
    sweep(running)
    demo.wait_for("nobody decided on a $250 service credit for Hooli in time")
    assert demo.error is None


def _call(running: Running, card: dict[str, Any]) -> Any:
    return next(c for c in running.slack.calls_to("chat.postMessage") if c.response.get("ts") == card["ts"])


def _approval_id(running: Running, customer: str) -> str:
    [approval] = rows(running, Approval, lambda a: a.customer == customer and a.action != "lead.reassign")
    return str(approval.id)


def test_the_demo_stops_cleanly_when_cancelled(running: Running, demo: Demo) -> None:
    demo.wait_for("asked for approval of")
    demo.stop()
    assert demo.task.cancelled() and isinstance(demo.error, asyncio.CancelledError), "cancelled, not failed"
    withdraw_pending(running)


def withdraw_pending(running: Running) -> None:
    """A stopped demo leaves its requests pending for people; withdrawn here so that the server's
    long-polls end with the test instead of holding its shutdown."""
    for approval in rows(running, Approval, lambda a: a.status == "pending"):
        headers = {"Authorization": f"Bearer {DEMO_TOKENS[approval.agent]}"}
        assert httpx.post(f"{running.url}/v1/approvals/{approval.id}/cancel", headers=headers).status_code == 200


def test_handrail_demo_prints_a_line_a_step_and_stops_on_ctrl_c(running: Running, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "demo", "--url", running.url],
        cwd=tmp_path,
        env=handrail_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True).start()
    seen = []
    while not any("reassigned 1 lead" in line for line in seen):
        seen.append(lines.get(timeout=30))
    assert (
        seen[0]
        == f"the demo agents lead-router and billing-bot are working against {running.url} (Ctrl-C stops them)\n"
    )
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert process.stderr is not None and process.stderr.read() == "handrail: the demo agents stopped\n"
    withdraw_pending(running)


# --- when it cannot play -----------------------------------------------------------------------------------


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def test_without_a_server_the_demo_says_so_in_one_sentence_and_exits_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DemoFailed, match=r"^cannot reach Handrail at http://127\.0\.0\.1:\d+: start it first"):
        asyncio.run(run_demo(url, pace=PACE, log=lambda line: None))
    done = run_handrail("demo", "--url", url, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"handrail: cannot reach Handrail at {url}")


def test_the_control_hook_takes_only_signed_hooks_for_demo_agents(
    clock: ManualClock, control: tuple[str, list[str]]
) -> None:
    origin, lines = control
    hook = {"agent": "lead-router", "action": "rollback", "to_version": "v1", "from_version": "v2"}
    body = json.dumps(hook | {"requested_by": "U0GRACE"}).encode()
    key = agent_key(WEBHOOK_SECRET, "lead-router")

    def post(agent: str = "lead-router", *, signed_by: str = key, at: int = 0, content: bytes = body) -> int:
        timestamp = int(clock.now().timestamp()) + at
        headers = {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(signed_by, timestamp, content)}
        return httpx.post(f"{origin}/local/demo/control/{agent}", content=content, headers=headers).status_code

    assert post() == 200 and lines == ["lead-router platform: rolled back from v2 to v1"]
    assert post(signed_by=agent_key("another secret", "lead-router")) == 401
    assert post(signed_by=agent_key(WEBHOOK_SECRET, "billing-bot")) == 401, "each agent has its own key"
    assert post(at=-301) == 401, "a hook older than five minutes is a replay"
    assert post("billing-bot", signed_by=agent_key(WEBHOOK_SECRET, "billing-bot")) == 422, "sent to another agent"
    assert post("nobody") == 404
    assert post(content=b"{not json") == 422
    assert len(lines) == 1
