"""The `handrail` commands run in process (`bot.cli.main`): config check and its alias, token create,
approvals list, migrate, version and mcp-proxy, with their output and exit codes. Each test has a
working directory of its own (pydantic-settings reads `.env` from it) and sets the variables it
needs; the session fixture in conftest.py has removed the developer's."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from bot import cli
from bot.api import ADMIN, token_agent
from bot.clock import ManualClock
from bot.config import Settings, package_version, parse_config, redact
from local.slack import FakeSlack
from storage.db import alembic_config, make_engine
from tests.helpers import AGENT_TOKENS, Running, ask, config_dict, serve
from tests.samples import REQUEST

POLICIES = [
    {"match": "lead.enrich", "mode": "auto"},
    {"match": "opportunity.update_amount", "mode": "human_only"},
]
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The test config, with a policy that approves at once and one that denies at once."""
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_dict() | {"policies": POLICIES}))
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of the test's own, without a `.env`; migrate's logging setup is left out so
    that pytest keeps its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.logs, "configure", lambda level="INFO", log_format=None: None)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- config check --------------------------------------------------------------------------------


def test_config_check_and_its_alias_config_check_print_the_same(
    workdir: Path, config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = ["--agent", "lead-router", "--action", "quote.create", "--fact", "discount_pct=12"]
    named = run(capsys, "config", "check", str(config_file), *sample)
    assert named == run(capsys, "config-check", str(config_file), *sample)
    code, out, err = named
    assert code == 0 and ": warning: agents.billing-bot.approvers.0: U0OWNER is an id from the example" in err
    assert out.startswith("ok: 2 agents (billing-bot, lead-router); 2 global policies, 0 agent policies\n")
    assert out.splitlines()[1] == "lead-router alert rules:"
    assert out.splitlines()[-1].startswith("lead-router quote.create: default")

    monkeypatch.setenv("HANDRAIL_CONFIG", str(config_file))  # no path: $HANDRAIL_CONFIG
    assert run(capsys, "config", "check") == run(capsys, "config-check") == (0, out.splitlines()[0] + "\n", err)

    bad = workdir / "bad.yml"
    bad.write_text(yaml.safe_dump({"agents": {"lead-router": {"name": "x"}}}))
    refused = run(capsys, "config", "check", str(bad))
    assert refused == run(capsys, "config-check", str(bad))
    assert refused[:2] == (2, "") and f"handrail: {bad}:" in refused[2]
    assert run(capsys, "config", "check", str(bad), "--agent", "x", "--fact", "d=lots")[0] == 2


# --- token create --------------------------------------------------------------------------------


def test_token_create_prints_a_token_once_and_the_digest_the_server_accepts(
    workdir: Path,
    settings: Settings,
    clock: ManualClock,
    slack: FakeSlack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANDRAIL_CONFIG", str(settings.handrail_config))
    code, out, err = run(capsys, "token", "create", "lead-router")
    assert (code, err) == (0, ""), "the agent is in the config, and stderr is not a terminal: nothing to say"
    token, line = out.splitlines()
    assert token.startswith("hr_") and len(token) == 3 + 43
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert line == f"token_sha256: {digest}"
    assert run(capsys, "token", "create", "lead-router")[1].splitlines()[0] != token, "a new token each time"

    data = yaml.safe_load(settings.handrail_config.read_text())
    data["agents"]["lead-router"]["token_sha256"] = line.partition(": ")[2]
    settings.handrail_config.write_text(yaml.safe_dump(data))
    server: Iterator[Running] = serve(settings, clock, slack)
    running = next(server)
    try:
        gate = f"{running.url}/v1/agents/lead-router/gate"
        assert httpx.get(gate, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
        old = {"Authorization": f"Bearer {AGENT_TOKENS['lead-router']}"}
        assert httpx.get(gate, headers=old, timeout=30).status_code == 401, "the old token is replaced"
    finally:
        next(server, None)


def test_token_create_admin_prints_the_admin_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDRAIL_CONFIG", str(workdir / "absent.yml"))
    code, out, err = run(capsys, "token", "create", "--admin")
    assert (code, err) == (0, "")
    token, line = out.splitlines()
    key, _, digest = line.partition(": ")
    assert key == "admin_token_sha256" and token.startswith("hr_")
    config = parse_config(config_dict() | {"admin_token_sha256": digest})
    assert token_agent(config, f"Bearer {token}", admin=True) == ADMIN
    for both_or_neither in (["lead-router", "--admin"], []):
        with pytest.raises(SystemExit) as usage:
            cli.main(["token", "create", *both_or_neither])
        assert usage.value.code == 2
    assert "one of the arguments agent --admin is required" in capsys.readouterr().err


def test_token_create_warns_about_an_agent_not_yet_in_the_config_and_needs_no_database(
    workdir: Path, config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDRAIL_CONFIG", str(config_file))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{workdir / 'no' / 'such' / 'dir.db'}")
    code, out, err = run(capsys, "token", "create", "invoice-bot")
    assert code == 0 and out.splitlines()[1].startswith("token_sha256: ")
    assert err == f"handrail: warning: no agent 'invoice-bot' in {config_file} yet: add it under agents:\n"

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run(capsys, "token", "create", "lead-router")
    assert code == 0 and len(out.splitlines()) == 2
    assert err == (
        "handrail: the token is shown this once: give it to lead-router (Authorization: Bearer <token>); the "
        f"token_sha256 line goes under agents.lead-router in {config_file} ($HANDRAIL_CONFIG)\n"
    )
    assert not (workdir / "no").exists()


@pytest.mark.parametrize("agent", ["Lead-Router", "_router", "lead router", "a" * 64, "lead.router", ""])
def test_token_create_refuses_an_id_the_config_would_refuse(
    workdir: Path, capsys: pytest.CaptureFixture[str], agent: str
) -> None:
    code, out, err = run(capsys, "token", "create", agent)
    assert (code, out) == (2, "")
    assert err == (
        f"handrail: {agent!r} is not an agent id: write 1 to 63 lower-case letters, digits, - or _, starting with "
        "a letter or a digit, e.g. lead-router\n"
    )
    assert run(capsys, "token", "create", "a" * 63)[0] == 0, "the longest id the config takes"


# --- approvals list ------------------------------------------------------------------------------

HOSTILE = "\x1b[2J\x1b]0;pwned\x07Refund \u202eACME\u202c\r\nline two\t" + "x" * 100


@pytest.fixture
def approvals(running: Running, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> dict[str, str]:
    """Five requests through the API, a minute apart, oldest first: their ids by what they became."""
    monkeypatch.setenv("DATABASE_URL", running.services.settings.database_url)
    ids = {"cancelled": ask(running, customer="acme")["id"]}
    assert running.agent().post(f"/v1/approvals/{ids['cancelled']}/cancel").status_code == 200
    for name, overrides in [
        ("approved", {"action": "lead.enrich"}),
        ("denied", {"action": "opportunity.update_amount"}),
        ("billing", {"agent": "billing-bot"}),
        ("hostile", {"summary": HOSTILE, "customer": "ACME\x1b[31m"}),
    ]:
        running.deliver_due()  # the cards are out before the clock moves: no backlog to shed requests for
        running.clock.advance(timedelta(minutes=1))
        response = running.agent(overrides.get("agent", "lead-router")).post("/v1/approvals", json=REQUEST | overrides)
        assert response.status_code == 201, response.text
        assert response.json()["summary"] == overrides.get("summary", REQUEST["summary"]), "stored as sent"
        ids[name] = response.json()["id"]
    return ids


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    code, out, err = run(capsys, "approvals", "list", "--format", "jsonl", *args)
    assert (code, err) == (0, "")
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.both_databases
def test_approvals_list_prints_the_newest_first_filtered_as_json_lines(
    approvals: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = approvals
    every = listed(capsys)
    assert [r["id"] for r in every] == [ids[n] for n in ("hostile", "billing", "denied", "approved", "cancelled")]
    assert [r["status"] for r in every] == ["pending", "pending", "denied", "approved", "cancelled"]
    assert set(every[0]) == {
        "id",
        "status",
        "agent",
        "action",
        "created_at",
        "expires_at",
        "decided_at",
        "summary",
        "target_id",
        "customer",
        "decided_by",
    }
    approved = every[3]
    assert (approved["action"], approved["decided_by"], approved["target_id"]) == ("lead.enrich", [], "006XYZ")
    assert approved["created_at"] == approved["decided_at"] == "2026-11-02T10:01:00Z"
    assert every[0]["decided_at"] is None and every[0]["expires_at"] == "2026-11-03T10:04:00Z"
    assert every[4]["customer"] == "acme" and every[4]["decided_at"] == "2026-11-02T10:00:00Z"

    assert [r["id"] for r in listed(capsys, "--agent", "billing-bot")] == [ids["billing"]]
    assert [r["id"] for r in listed(capsys, "--status", "pending")] == [ids["hostile"], ids["billing"]]
    assert [r["id"] for r in listed(capsys, "--agent", "lead-router", "--status", "pending")] == [ids["hostile"]]
    assert [r["id"] for r in listed(capsys, "--status", "denied")] == [ids["denied"]]
    assert [r["id"] for r in listed(capsys, "--limit", "2")] == [ids["hostile"], ids["billing"]]
    assert listed(capsys, "--status", "expired") == [], "no rows: nothing printed, exit 0"


def test_approvals_list_shows_agents_text_without_control_characters(
    approvals: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    shown = ("[2J]0;pwnedRefund ACME line two " + "x" * 100)[:59] + "…"
    code, out, err = run(capsys, "approvals", "list", "--format", "jsonl", "--limit", "1")
    assert (code, err) == (0, "")
    record = json.loads(out)
    assert (record["summary"], record["customer"]) == (shown, "ACME\x1b[31m"), "JSON keeps the data, escaped"
    assert out.isascii() and "\x1b" not in out

    code, out, err = run(capsys, "approvals", "list")
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["id", "status", "agent", "action", "created_at", "expires/decided", "summary"]
    assert len(rows) == 5, "every request on one line"
    assert not any(c in out for c in "\x1b\x07\r\t\u202e\u202c")
    assert rows[0].split(None, 6) == [
        approvals["hostile"],
        "pending",
        "lead-router",
        "opportunity.update_stage",
        "2026-11-02T10:04:00Z",
        "2026-11-03T10:04:00Z",
        shown,
    ]
    assert rows[2].split()[:6] == [
        approvals["denied"],
        "denied",
        "lead-router",
        "opportunity.update_amount",
        "2026-11-02T10:02:00Z",
        "2026-11-02T10:02:00Z",
    ], "decided: the time of the decision"
    starts = {line.index(word) for line in (header, *rows) for word in line.split()[1:2]}
    assert len(starts) == 1, "the status column starts at the same place on every line"


def test_approvals_list_without_rows_says_so_on_stderr_only(
    approvals: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "approvals", "list", "--agent", "nobody") == (
        0,
        "",
        "handrail: no approvals with --agent nobody\n",
    )
    assert run(capsys, "approvals", "list", "--agent", "nobody", "--format", "jsonl") == (0, "", "")
    for bad in (["--status", "lost"], ["--limit", "0"], ["--limit", "1001"], ["--format", "csv"]):
        with pytest.raises(SystemExit) as usage:
            cli.main(["approvals", "list", *bad])
        assert usage.value.code == 2


def test_approvals_list_on_a_database_not_migrated_exits_2_and_creates_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = workdir / "missing.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{missing}")
    assert run(capsys, "approvals", "list") == (
        2,
        "",
        f"handrail: DATABASE_URL: sqlite:///{missing} has no Handrail tables yet: run `handrail migrate` first\n",
    )
    assert not missing.exists()

    other = workdir / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER)")
    connection.close()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{other}")
    code, out, err = run(capsys, "approvals", "list", "--format", "jsonl")
    assert (code, out) == (2, "") and err.endswith("has no Handrail tables yet: run `handrail migrate` first\n")
    engine = make_engine(f"sqlite:///{other}")
    assert inspect(engine).get_table_names() == ["notes"], "no table is created"

    previous = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(HEAD).down_revision
    command.upgrade(alembic_config(f"sqlite:///{other}"), str(previous))
    engine.dispose()
    code, out, err = run(capsys, "approvals", "list")
    assert (code, out) == (2, "")
    assert err == (
        f"handrail: DATABASE_URL: sqlite:///{other} is at revision {previous}, not {HEAD}: run `handrail migrate` "
        "first\n"
    )


# --- migrate -------------------------------------------------------------------------------------


def test_migrate_says_from_which_revision_to_which_then_that_it_is_up_to_date(
    workdir: Path, database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if database_url.startswith("postgresql"):  # trust authentication: any password is taken, and never shown
        database_url = database_url.replace("://handrail@", "://handrail:s3cret-pw@")
    monkeypatch.setenv("DATABASE_URL", database_url)
    shown = redact(database_url)
    assert run(capsys, "migrate") == (0, f"migrated {shown} from empty to {HEAD}\n", "")
    assert run(capsys, "migrate") == (0, f"{shown}: already at {HEAD}\n", "")
    assert "s3cret" not in shown

    previous = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(HEAD).down_revision
    command.downgrade(alembic_config(database_url), str(previous))
    assert run(capsys, "migrate") == (0, f"migrated {shown} from {previous} to {HEAD}\n", "")


# --- version, help, mcp-proxy --------------------------------------------------------------------


def test_version_prints_what_dash_dash_version_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "version") == (0, f"handrail {package_version()}\n", "")
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert (done.value.code, capsys.readouterr().out) == (0, f"handrail {package_version()}\n")


def test_every_command_has_help_and_a_description_and_the_exit_codes_are_told(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def commands(parser: Any, path: str) -> Iterator[tuple[str, Any, str | None]]:
        for action in parser._subparsers._group_actions if parser._subparsers else []:
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub, helps.get(name)
                yield from commands(sub, f"{path} {name}")

    found = {name: (sub, text) for name, sub, text in commands(cli.parser(), "handrail")}
    for name in ("web", "worker", "migrate", "config check", "config-check", "token create", "webhook-key"):
        assert f"handrail {name}" in found
    for name in ("approvals list", "outbox list", "outbox retry", "outbox drop", "audit export", "audit verify"):
        assert f"handrail {name}" in found
    for name in ("demo", "mcp-proxy", "version"):
        assert f"handrail {name}" in found
    for name, (sub, text) in found.items():
        assert text and sub.description, f"{name} has no help or no description"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    told = capsys.readouterr().out
    assert "exit codes:\n  0  done\n  1  outbox retry or drop named a row that is unknown or not dead" in told
    assert "\n  2  a usage mistake" in told


def test_mcp_proxy_without_the_client_extra_exits_2_with_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "handrail_client.mcp_proxy", None)  # import raises ImportError
    assert run(capsys, "mcp-proxy", "--help") == (
        2,
        "",
        "handrail: the MCP proxy needs the client with its mcp extra: pip install 'handrail-client[mcp]'\n",
    )


def test_mcp_proxy_gets_the_rest_of_the_line_untouched_and_its_exit_code_is_handrails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[list[str]] = []
    proxy = types.ModuleType("handrail_client.mcp_proxy")
    proxy.main = lambda argv: given.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "handrail_client.mcp_proxy", proxy)
    argv = ["--url", "http://127.0.0.1:3000", "--help", "-v", "mcp-proxy", "--", "x"]
    assert cli.main(["mcp-proxy", *argv]) == 7
    assert given == [argv]
    assert cli.main(["mcp-proxy"]) == 7 and given[-1] == []
