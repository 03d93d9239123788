"""The MCP proxy (handrail_client.mcp_proxy) against the real server and the fake Slack: the test is
the MCP host. It starts `python -m handrail_client.mcp_proxy` over stdio with the mcp SDK's own
client, as Claude Desktop or an IDE would, and the proxy starts the small upstream server of
tests/mcp_upstream.py, which logs every tool call it runs to a file."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from handrail_client.mcp_proxy import action_of, main
from local.slack import FakeSlack
from tests import slackreq
from tests.helpers import AGENT_TOKENS, Running, config_dict
from tests.reviewer import Reviewer, approve, deny, edit

T = TypeVar("T")
UPSTREAM = Path(__file__).with_name("mcp_upstream.py")
TOKEN = AGENT_TOKENS["lead-router"]
SERVER = "CRM_notes"  # the upstream calls itself "CRM notes"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"roles": {"managers": ["U0BOSS"]}}
    data["agents"]["lead-router"]["policies"] = [
        {"match": "mcp.*.count_records", "mode": "auto"},
        {"match": "mcp.*.add_note", "mode": "approve", "editable": ["text"]},
    ]
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


class Host:
    """Runs the proxy (and through it the upstream) the way an MCP host does, and keeps what the
    upstream ran and what the proxy wrote on stderr."""

    def __init__(self, tmp_path: Path, url: str, token: str = TOKEN) -> None:
        self.log, self.stderr, self.url, self.token = tmp_path / "upstream.jsonl", tmp_path / "proxy.stderr", url, token
        self.progress: list[str] = []

    def run(self, scenario: Callable[[Client], Awaitable[T]], *options: str, mode: str = "auto") -> T:
        upstream = shlex.join([sys.executable, str(UPSTREAM), str(self.log)])
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "handrail_client.mcp_proxy", "--upstream", upstream, *options],
            env={
                "HANDRAIL_URL": self.url,
                "HANDRAIL_TOKEN": self.token,
                "HANDRAIL_AGENT": "lead-router",
                "CRM_API_KEY": "crm-key-1",  # the upstream's own secret, which it must get
            },
        )

        async def hosted() -> T:
            with self.stderr.open("w") as stderr:
                async with Client(stdio_client(params, errlog=stderr), cache=None, mode=mode) as client:
                    return await scenario(client)

        result = asyncio.run(hosted())
        printed = self.stderr.read_text()
        assert "handrail mcp-proxy: 3 tools of" in printed and self.token not in printed
        return result

    async def call(self, client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        async def progress(done: float, total: float | None, message: str | None) -> None:
            self.progress.append(message or "")

        return await client.call_tool(tool, arguments, progress_callback=progress)

    def ran(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        assert lines[0] == {"started": [], "crm_key": "crm-key-1"}, (
            "the upstream gets the proxy's environment without HANDRAIL_*"
        )
        return lines[1:]


@pytest.fixture
def host(running: Running, tmp_path: Path) -> Host:
    return Host(tmp_path, running.url)


def text_of(result: CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


def approval(running: Running, approval_id: str) -> dict[str, Any]:
    found: dict[str, Any] = running.agent().get(f"/v1/approvals/{approval_id}").json()
    return found


def events(running: Running, event: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = running.agent().get("/v1/audit", params={"event": event}).json()["events"]
    return found


def command(running: Running, text: str, user: str = "U0OWNER") -> None:
    assert running.slack_post(slackreq.slash_command(text=text, user_id=user)).status_code == 200


def test_the_host_sees_the_upstreams_tools_unchanged(host: Host, tmp_path: Path) -> None:
    async def both(client: Client) -> tuple[Any, Any, str | None]:
        direct = StdioServerParameters(command=sys.executable, args=[str(UPSTREAM), str(tmp_path / "direct.jsonl")])
        async with Client(direct, cache=None) as upstream:
            expected = [tool.model_dump() for tool in (await upstream.list_tools()).tools]
        info = client.server_info
        return [tool.model_dump() for tool in (await client.list_tools()).tools], expected, info and info.name

    proxied, expected, name = host.run(both)
    assert proxied == expected and [tool["name"] for tool in proxied] == ["add_note", "delete_record", "count_records"]
    assert proxied[1]["annotations"]["destructive_hint"] is True and proxied[1]["input_schema"]["required"] == ["id"]
    assert name == "CRM notes" and host.ran() == []


def test_an_approved_call_runs_upstream_with_its_arguments(running: Running, slack: FakeSlack, host: Host) -> None:
    with Reviewer(running, slack, approve()) as reviewer:
        result = host.run(lambda client: host.call(client, "delete_record", {"id": 7}))

    assert not result.is_error and text_of(result) == "record 7 deleted"
    assert result.structured_content == {"result": "record 7 deleted"}  # the upstream's result, unchanged
    assert host.ran() == [{"tool": "delete_record", "args": {"id": 7}}]
    assert host.progress == ["waiting for approval of mcp.CRM_notes.delete_record in Handrail"]
    [approval_id] = reviewer.decided
    asked = approval(running, approval_id)
    assert asked["action"] == "mcp.CRM_notes.delete_record" and asked["params"] == {"id": 7}
    assert asked["target"] == {"system": "mcp", "object": SERVER, "id": "delete_record", "url": None}
    assert asked["request_reason"] == "delete_record on the MCP server CRM_notes: Delete a CRM record for good."
    assert asked["status"] == "approved" and asked["executed_at"] is not None
    [recorded] = events(running, "action.recorded")
    assert recorded["source"]["approval_id"] == approval_id


def test_a_denial_returns_a_tool_error_with_the_reason_and_nothing_runs(
    running: Running, slack: FakeSlack, host: Host
) -> None:
    with Reviewer(running, slack, deny("Record 7 is under legal hold")) as reviewer:
        result = host.run(lambda client: host.call(client, "delete_record", {"id": 7}))

    assert result.is_error
    assert text_of(result) == (
        "Handrail: delete_record was denied by a reviewer, so it did not run. Reason: Record 7 is under legal hold"
    )
    assert host.ran() == []
    asked = approval(running, reviewer.decided[0])
    assert asked["status"] == "denied" and asked["params"] == {"id": 7} and asked["executed_at"] is None
    assert events(running, "action.recorded") == []


def test_an_edited_argument_reaches_the_upstream_edited(running: Running, slack: FakeSlack, host: Host) -> None:
    with Reviewer(running, slack, edit("Keep it neutral", text="Customer asked for a call")) as reviewer:
        result = host.run(lambda client: host.call(client, "add_note", {"text": "Customer is furious"}))

    assert not result.is_error and text_of(result) == "noted: Customer asked for a call"
    assert host.ran() == [{"tool": "add_note", "args": {"text": "Customer asked for a call"}}]
    asked = approval(running, reviewer.decided[0])
    assert asked["edited"] and asked["proposed_params"] == {"text": "Customer is furious"}
    assert asked["params"] == {"text": "Customer asked for a call"} and asked["executed_at"] is not None


def test_an_auto_policy_lets_its_tool_run_at_once(running: Running, slack: FakeSlack, host: Host) -> None:
    result = host.run(lambda client: host.call(client, "count_records", {}))

    assert not result.is_error and text_of(result) == "42"
    assert host.ran() == [{"tool": "count_records", "args": {}}]
    [requested] = events(running, "approval.requested")
    asked = approval(running, requested["object_id"])
    assert asked["action"] == "mcp.CRM_notes.count_records" and asked["code"] == "auto"
    assert asked["executed_at"] is not None and slack.calls_to("chat.postMessage") == []


def test_a_host_of_the_handshake_era_is_served_too(running: Running, host: Host) -> None:
    async def scenario(client: Client) -> tuple[str, list[str], CallToolResult]:
        listed = [tool.name for tool in (await client.list_tools()).tools]
        return client.protocol_version, listed, await host.call(client, "count_records", {})

    version, listed, result = host.run(scenario, mode="legacy")  # initialize, as hosts before 2026 do
    assert version < "2026" and listed == ["add_note", "delete_record", "count_records"]
    assert not result.is_error and text_of(result) == "42" and len(events(running, "approval.requested")) == 1


def test_a_tool_outside_the_gate_patterns_passes_straight_through(
    running: Running, slack: FakeSlack, host: Host
) -> None:
    async def scenario(client: Client) -> CallToolResult:
        return await host.call(client, "add_note", {"text": "Called back"})

    result = host.run(scenario, "--gate", "delete_*", "--gate", "send_*")
    assert not result.is_error and text_of(result) == "noted: Called back"
    assert host.ran() == [{"tool": "add_note", "args": {"text": "Called back"}}]
    assert events(running, "approval.requested") == [] and host.progress == []
    assert "asking" in host.stderr.read_text() and "about delete_record\n" in host.stderr.read_text()


def test_a_paused_agent_gets_a_tool_error_and_nothing_runs(running: Running, slack: FakeSlack, host: Host) -> None:
    command(running, "pause lead-router incident 42")
    result = host.run(lambda client: host.call(client, "delete_record", {"id": 7}))

    assert result.is_error and text_of(result).startswith("Handrail: the agent is paused: ")
    assert "incident 42" in text_of(result) and text_of(result).endswith("delete_record did not run.")
    assert host.ran() == [] and events(running, "approval.requested") == []


def test_in_shadow_mode_the_call_is_recorded_and_not_made(running: Running, host: Host) -> None:
    command(running, "mode lead-router shadow", user="U0BOSS")
    result = host.run(lambda client: host.call(client, "delete_record", {"id": 7}))

    assert result.is_error and text_of(result).startswith("Handrail: the agent runs in shadow mode")
    assert "sha_" in text_of(result)  # the shadow action Handrail recorded instead
    assert host.ran() == [] and events(running, "approval.requested") == []


def test_a_call_nobody_decides_in_time_is_withdrawn_and_refused(running: Running, host: Host) -> None:
    result = host.run(lambda client: host.call(client, "delete_record", {"id": 7}), "--wait-timeout", "0.5")

    assert result.is_error and text_of(result) == (
        "Handrail: nobody decided on delete_record within the wait timeout (the request is withdrawn), "
        "so it did not run."
    )
    assert host.ran() == []
    [requested] = events(running, "approval.requested")
    assert approval(running, requested["object_id"])["status"] == "cancelled"


def test_an_unreachable_handrail_refuses_every_gated_call(tmp_path: Path) -> None:
    host = Host(tmp_path, "http://127.0.0.1:9")  # nothing listens on the discard port
    result = host.run(lambda client: host.call(client, "add_note", {"text": "hello"}))

    assert result.is_error and host.ran() == []
    assert text_of(result).startswith("Handrail: Handrail could not be reached, which counts as paused: ")


def test_a_token_handrail_refuses_fails_closed(running: Running, tmp_path: Path) -> None:
    host = Host(tmp_path, running.url, token="tok-not-ours")
    result = host.run(lambda client: host.call(client, "add_note", {"text": "hello"}))

    assert result.is_error and host.ran() == []
    assert text_of(result).startswith("Handrail: the call could not be put to Handrail, so add_note did not run: 401 ")


def test_action_names_keep_to_what_handrail_accepts() -> None:
    assert action_of("crm", "delete_record") == "mcp.crm.delete_record"
    assert action_of("crm", "files/read v2") == "mcp.crm.files/read_v2"


def test_help_documents_the_options_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    for option in ("--upstream", "--name", "--url", "--token", "--agent", "--gate", "--wait-timeout", "HANDRAIL_TOKEN"):
        assert option in printed
    assert "examples:" in printed and 'handrail mcp-proxy --upstream "npx -y @acme/crm-mcp"' in printed


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ([], "the following arguments are required: --upstream"),
        (["--upstream", "srv"], "no Handrail url: pass --url or set HANDRAIL_URL"),
        (["--upstream", "srv", "--url", "http://h"], "no Handrail token: pass --token or set HANDRAIL_TOKEN"),
        (["--upstream", "'srv", "--url", "u", "--token", "t", "--agent", "a"], "--upstream: No closing quotation"),
        (["--upstream", "srv", "--url", "u", "--token", "t", "--agent", "a", "--name", "a b"], "--name takes"),
        (["--upstream", "srv", "--url", "u", "--token", "t", "--agent", "a", "--wait-timeout", "0"], "positive"),
        (["--upstream", "srv", "--url", "u", "--token", "t", "--agent", "a", "--wait-timeout", "x"], "invalid float"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert said in capsys.readouterr().err


def test_an_upstream_that_cannot_start_exits_1_saying_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-server")
    assert main(["--upstream", missing, "--url", "http://127.0.0.1:9", "--token", "secret-1", "--agent", "a"]) == 1
    printed = capsys.readouterr().err
    assert f"cannot start or reach the upstream {missing!r}: FileNotFoundError" in printed and "secret-1" not in printed
