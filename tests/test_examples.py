"""The agent authors' examples under examples/, each run as a user runs it (its own process)
against the real server with local mode's demo config (the tokens the examples use by default),
while a reviewer answers the cards in Slack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from handrail_client import Handrail
from local.demo import CONFIG_PATH, DEMO_TOKENS, PEOPLE_PATH
from local.slack import FakeSlack
from tests.helpers import ROOT, Running, handrail_env
from tests.reviewer import Decision, Reviewer, approve, deny, edit

EXAMPLES = ROOT / "examples"
PRIYA = "U0PRIYA"  # an approver of lead-router in demo.yml


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = yaml.safe_load(CONFIG_PATH.read_text())
    del data["limits"]  # the server's clock stands still in tests: a one-second window would never end
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def running(running: Running) -> Running:
    """The server, its fake Slack knowing the demo's user groups as local mode's does."""
    for group_id, group in yaml.safe_load(PEOPLE_PATH.read_text())["usergroups"].items():
        running.slack.usergroup_members[group_id] = list(group["members"])
    return running


def demo_agent(running: Running) -> Handrail:
    return Handrail(running.url, DEMO_TOKENS["lead-router"], agent="lead-router")


def run_example(
    running: Running, slack: FakeSlack, name: str, *decisions: Decision, args: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run examples/<name> to its end while a reviewer gives `decisions`; its output and the ids
    of the requests decided."""
    with Reviewer(running, slack, *decisions, user=PRIYA) as reviewer:
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / name), *args],
            env=handrail_env(HANDRAIL_URL=running.url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    return done, reviewer.decided


def test_the_decorator_example_updates_the_stage_once_approved(running: Running, slack: FakeSlack) -> None:
    done, [approval_id] = run_example(running, slack, "decorator_agent.py", approve())
    assert done.returncode == 0, done.stderr
    assert "updated 006ACME: StageName = Closed Won" in done.stdout
    approval = demo_agent(running).get_approval(approval_id)
    assert approval.executed_at is not None and approval.params == {"opp": "006ACME", "stage": "Closed Won"}
    assert approval.summary == "Move 006ACME to Closed Won"


def test_the_decorator_example_reports_a_denial_with_its_reason(running: Running, slack: FakeSlack) -> None:
    done, _ = run_example(running, slack, "decorator_agent.py", deny("Wait for the countersignature"))
    assert done.returncode == 1 and "not done:" in done.stdout and "Wait for the countersignature" in done.stdout


def test_the_openai_agents_example_calls_again_with_what_the_reviewer_approved(
    running: Running, slack: FakeSlack
) -> None:
    done, [approval_id] = run_example(
        running, slack, "openai_agents_agent.py", edit("Not signed yet", stage="Negotiation")
    )
    assert done.returncode == 0, done.stderr
    assert (
        "updated 006ACME: StageName = Negotiation" in done.stdout and "Closed Won" not in done.stdout.split("...")[-1]
    )
    approval = demo_agent(running).get_approval(approval_id)
    assert (
        approval.edited
        and approval.executed_at is not None
        and approval.proposed_params == {"opp": "006ACME", "stage": "Closed Won"}
    )


def test_the_openai_agents_example_tells_the_model_the_reviewers_reason(running: Running, slack: FakeSlack) -> None:
    done, _ = run_example(running, slack, "openai_agents_agent.py", deny("Wrong opportunity"))
    assert done.returncode == 0, done.stderr
    assert "denied by a reviewer" in done.stdout and "Reason: Wrong opportunity" in done.stdout
    assert "updated" not in done.stdout


def test_the_pydantic_ai_example_runs_the_tool_with_what_the_reviewer_approved(
    running: Running, slack: FakeSlack
) -> None:
    done, [approval_id] = run_example(
        running, slack, "pydantic_ai_agent.py", edit("They went with a competitor", stage="Closed Lost")
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "updated 006ACME: StageName = Closed Lost",
        "The tool said: 006ACME is now Closed Lost",
    ]
    assert demo_agent(running).get_approval(approval_id).executed_at is not None


def test_the_langgraph_example_writes_once_approved_and_not_when_denied(running: Running, slack: FakeSlack) -> None:
    done, [approval_id] = run_example(running, slack, "langgraph_agent.py", approve())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["updated 006ACME: StageName = Closed Won", "updated"]
    assert demo_agent(running).get_approval(approval_id).executed_at is not None

    denied, _ = run_example(running, slack, "langgraph_agent.py", deny("Wait for the countersignature"))
    assert denied.returncode == 1 and "updated 006ACME" not in denied.stdout
    assert "not done:" in denied.stdout and "Wait for the countersignature" in denied.stdout


def test_the_mcp_example_passes_a_note_through_and_deletes_only_once_approved(
    running: Running, slack: FakeSlack
) -> None:
    done, [approval_id] = run_example(running, slack, "mcp_proxy.py", approve())
    assert done.returncode == 0, done.stderr
    assert "add_note:" in done.stdout and "delete_record: record 001ACME deleted" in done.stdout
    approval = demo_agent(running).get_approval(approval_id)
    assert approval.action == "mcp.crm.delete_record" and approval.params == {"id": "001ACME"}

    denied, _ = run_example(running, slack, "mcp_proxy.py", deny("Legal hold on ACME"))
    assert denied.returncode == 1 and "refused: Handrail: delete_record was denied" in denied.stdout
    assert "Legal hold on ACME" in denied.stdout
