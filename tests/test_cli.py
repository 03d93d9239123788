"""The operator's first hour: `handrail` and `make run` as a user runs them (subprocesses), and the
tests themselves kept apart from the developer's `.env` and environment."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import EXAMPLE_IDS, Settings
from local.slack import FakeSlack
from storage.db import Database
from storage.tables import ProcessRow
from tests.helpers import ROOT, SIGNING_SECRET, config_dict, handrail_env, run_handrail, serve
from tests.servers import free_port


def real_config() -> dict[str, Any]:
    """A config with nothing left from the example, so nothing is warned about."""
    return {
        "agents": {
            "lead-router": {
                "name": "Lead router",
                "token_sha256": hashlib.sha256(b"a real token").hexdigest(),
                "channel": "C07LEADS",
                "owners": {"primary": "U07ALICE", "backup": "U07BOB"},
                "approvers": ["U07ALICE", "S07REVOPS"],
            }
        }
    }


def write(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- the tests do not read the developer's settings ------------------------------------------------


def test_the_tests_pass_with_a_developers_env_file_and_variables(tmp_path: Path) -> None:
    """Follow the README's `.env` step (and worse), export settings in the shell, and run the tests
    that start `handrail` and build Settings from the directory that holds the `.env`."""
    dotenv = (
        "SLACK_BOT_TOKEN=xoxb-from-dotenv\nSLACK_SIGNING_SECRET=from-dotenv\nHANDRAIL_WEBHOOK_SECRET=from-dotenv\n"
        "HANDRAIL_CONFIG=/nonexistent/handrail.yml\nHANDRAIL_SWEEP_INTERVAL=fast\nPORT=abc\n"
        "DATABASE_URL=postgresql://dev:dev@127.0.0.1:1/dev\n"
    )
    write(tmp_path / ".env", dotenv)
    shell = {
        "SLACK_BOT_TOKEN": "xoxb-from-shell",
        "SLACK_SIGNING_SECRET": "from-shell",
        "HANDRAIL_WEBHOOK_SECRET": "from-shell",
        "HANDRAIL_CONFIG": "/nonexistent/shell.yml",
        "HANDRAIL_SWEEP_INTERVAL": "slow",
        "handrail_scheduler": "maybe",  # pydantic-settings ignores the case of names
        "slack_api_url": "http://127.0.0.1:1/",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "PORT": "abc",
    }
    chosen = [
        # The three that failed: they run `handrail`, which read the .env of the working directory.
        "test_config.py::test_web_with_half_the_slack_credentials_names_what_is_missing",
        "test_config.py::test_web_with_a_bad_config_fails_at_start_naming_the_key",
        "test_config.py::test_config_check_and_webhook_key",
        "test_worker.py::test_the_worker_needs_slack_credentials",
        # Needs HANDRAIL_WEBHOOK_SECRET unset, which both the .env and the shell set.
        "test_cli.py::test_a_control_url_without_the_webhook_secret_stops_the_start",
        # The real server, built in-process from the settings fixture.
        "test_cli.py::test_the_api_document_reads_the_version_from_the_package_metadata",
    ]
    nested = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'basetemp'}",
            *(str(ROOT / "tests" / test) for test in chosen),
        ],
        cwd=tmp_path,
        env=handrail_env(**shell),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert nested.returncode == 0, nested.stdout[-4000:] + nested.stderr[-2000:]
    assert re.search(r"\b7 passed\b", nested.stdout), nested.stdout[-2000:]


# --- the version ---------------------------------------------------------------------------------


def test_version_prints_the_installed_packages_version(tmp_path: Path) -> None:
    result = run_handrail("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, f"handrail {metadata.version('handrail')}")


def test_the_api_document_reads_the_version_from_the_package_metadata(
    settings: Settings, clock: ManualClock, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metadata, "version", lambda name: "9.8.7" if name == "handrail" else "0")
    server: Iterator[Any] = serve(settings, clock, slack)
    running = next(server)
    try:
        assert httpx.get(f"{running.url}/openapi.json", timeout=30).json()["info"]["version"] == "9.8.7"
    finally:
        next(server, None)


def test_the_package_version_is_the_changelogs_newest_entry() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    changelog = (ROOT / "README.md").read_text().partition("## Changelog")[2]
    assert re.findall(r"^- (\d+\.\d+\.\d+):", changelog, re.MULTILINE)[0] == version


# --- config-check --------------------------------------------------------------------------------

BAD = """\
agents:
  lead-router:
    name: Lead router
    token_sha256: not-a-hash
    channel: "#approvals"
    owners: {primary: alice}
    approvers: U07ALICE
    chanel: C07LEADS
    approval_timeout: soon
policies:
  - match: "quote.*"
    mode: sometimes
"""


def test_config_check_lists_every_problem_one_per_line_in_plain_words(tmp_path: Path) -> None:
    path = write(tmp_path / "handrail.yml", BAD)
    result = run_handrail("config-check", str(path), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert lines(result.stderr) == [
        f"handrail: {path}:4: agents.lead-router.token_sha256: must be the SHA-256 of the agent's token: 64 hex "
        'characters (printf %s "$TOKEN" | sha256sum)',
        f'handrail: {path}:5: agents.lead-router.channel: "#approvals" is not a Slack channel id: write the '
        "channel's id, e.g. C0123ABCD (the channel's details, at the bottom)",
        f'handrail: {path}:6: agents.lead-router.owners.primary: "alice" is not a Slack user id: write the '
        "person's member id, e.g. U0123ABCD (their profile, ⋮, Copy member ID)",
        f"handrail: {path}:7: agents.lead-router.approvers: should be a list: write [U07ALICE]",
        f"handrail: {path}:8: agents.lead-router.chanel: unknown key: did you mean channel?",
        f'handrail: {path}:9: agents.lead-router.approval_timeout: "soon" is not a duration: write 5s, 15m, 4h, '
        "1d or a number of seconds",
        f'handrail: {path}:12: policies.0.mode: "sometimes" is not allowed here: write auto, approve or human_only',
    ]


def test_config_check_lists_every_policy_that_cannot_work_with_durations_as_written(tmp_path: Path) -> None:
    data = real_config()
    data["agents"]["billing-bot"] = data["agents"]["lead-router"] | {
        "token_sha256": hashlib.sha256(b"another token").hexdigest(),
        "owners": {"primary": "U07CAROL"},
        "approval_timeout": "90m",
    }
    data["policies"] = [
        {"match": "refund.*", "mode": "approve", "escalation": [{"after": "2h", "notify": "backup"}]},
        {"match": "quote.*", "mode": "approve", "approvers": ["U07ALICE"], "quorum": 2, "timeout": "15m"},
    ]
    path = write(tmp_path / "handrail.yml", data)
    result = run_handrail("config-check", str(path), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    problems = [line.split(": ", 2)[2] for line in lines(result.stderr)]
    assert sorted(problems) == sorted(
        [
            "policies.0.escalation.0: the step after 2h would come after the request expires "
            "(agents.billing-bot.approval_timeout, 90m; agent billing-bot): make the step earlier or the timeout "
            "longer",
            "policies.0.escalation.0.notify: the step notifies backup, but agent billing-bot has no owners.backup: "
            "add owners.backup to the agent, or notify an owner it has",
            "policies.1.quorum: quorum 2 needs more approvers than the 1 listed (agent lead-router): lower the "
            "quorum, or list more approvers (a user group counts as many)",
            "policies.1.quorum: quorum 2 needs more approvers than the 1 listed (agent billing-bot): lower the "
            "quorum, or list more approvers (a user group counts as many)",
        ]
    )


def test_problems_inside_entries_and_across_them_come_in_one_run(tmp_path: Path) -> None:
    example = (ROOT / "handrail.example.yml").read_text()
    broken = example.replace("oncall: [S0ONCALL]", 'oncall: ["@oncall"]')
    broken = broken.replace("{after: 2h, notify: escalation_manager}", "{after: 6h, notify: escalation_manager}")
    path = write(tmp_path / "handrail.yml", broken)
    result = run_handrail("config-check", str(path), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert [line.split(": ", 3)[2] for line in lines(result.stderr)] == ["roles.oncall.0", "policies.1.escalation.2"]
    assert "the step after 6h would come after the request expires (the policy's timeout, 4h;" in result.stderr


def test_an_agent_written_twice_is_refused_naming_the_key_and_both_lines(tmp_path: Path) -> None:
    agent = yaml.safe_dump(real_config()["agents"]["lead-router"], default_flow_style=True, width=1000).strip()
    path = write(
        tmp_path / "handrail.yml", f"agents:\n  lead-router: {agent}\n  other: {agent}\n  lead-router: {agent}\n"
    )
    result = run_handrail("config-check", str(path), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert lines(result.stderr) == [
        f"handrail: {path}:4: agents.lead-router: is written twice, on lines 2 and 4: keep one (a YAML reader "
        "would silently keep only the second)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty: describe your agents under agents: (copy handrail.example.yml to start)"),
        ("# nothing yet\n", "the file is empty"),
        ("agents: {}\n", ":1: agents: no agent is defined: describe at least one under agents:"),
        ("agents:\n", ":1: agents: is empty: give its settings, e.g. agents: lead-router:"),
    ],
)
def test_a_config_without_agents_is_not_ok(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "handrail.yml", text)
    result = run_handrail("config-check", str(path), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert expected in result.stderr


def test_values_left_from_the_example_are_warned_about(tmp_path: Path) -> None:
    example = (ROOT / "handrail.example.yml").read_text()
    path = write(tmp_path / "handrail.yml", example)
    result = run_handrail("config-check", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 1 agent (lead-router); 3 global policies, 0 agent policies")
    warnings = lines(result.stderr)
    assert all(line.startswith(f"handrail: {path}:") and ": warning: " in line for line in warnings)
    line_of = {line: number for number, line in enumerate(example.splitlines(), start=1)}
    zeros = next(number for text, number in line_of.items() if "token_sha256:" in text)
    assert (
        f"handrail: {path}:{zeros}: warning: agents.lead-router.token_sha256: is a placeholder (one digit repeated), "
        "so no token matches it: write the SHA-256 of the agent's token" in result.stderr
    )
    assert "agents.lead-router.channel: C0APPROVALS is an id from the example config: write the id" in result.stderr
    assert "roles.oncall.0: S0ONCALL is an id from the example config" in result.stderr
    assert "agents.lead-router.control_url: https://agents.example/handrail/control points at agents.example" in (
        result.stderr
    )
    # Every Slack id the example shows is one the check knows.
    assert set(re.findall(r"\b[UWSCGD]0[A-Z0-9]{3,}\b", example)) <= EXAMPLE_IDS

    data = real_config()
    data["agents"]["lead-router"]["control_url"] = "https://handrail.example.com/control"
    other = write(tmp_path / "other.yml", data)
    line = next(n for n, text in enumerate(other.read_text().splitlines(), start=1) if "control_url" in text)
    clean = run_handrail("config-check", str(other), cwd=tmp_path)
    assert clean.returncode == 0
    assert lines(clean.stderr) == [
        f"handrail: {other}:{line}: warning: agents.lead-router.control_url: "
        "https://handrail.example.com/control points at handrail.example.com, a host reserved for examples: "
        "write your real URL"
    ]


def test_an_unknown_agent_is_refused_before_anything_is_declared_ok(tmp_path: Path) -> None:
    path = write(tmp_path / "handrail.yml", real_config())
    result = run_handrail("config-check", str(path), "--agent", "nobody", "--action", "x", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert lines(result.stderr) == [f"handrail: no agent 'nobody' in {path} (its agents: lead-router)"]


# --- the environment -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["web", "worker", "migrate", "config-check"])
def test_a_bad_environment_variable_is_named_in_a_sentence(tmp_path: Path, command: str) -> None:
    result = run_handrail(
        command,
        cwd=tmp_path,
        HANDRAIL_SWEEP_INTERVAL="fast",
        PORT="abc",
        HANDRAIL_CONFIG=str(write(tmp_path / "handrail.yml", real_config())),
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
    )
    assert result.returncode == 2
    assert lines(result.stderr) == [
        'handrail: HANDRAIL_SWEEP_INTERVAL: "fast" is not a duration: write 5s, 15m, 4h, 1d or a number of seconds',
        'handrail: PORT: "abc" is not a port number: write a whole number from 1 to 65535, e.g. PORT=3000',
    ]


@pytest.mark.parametrize("command", ["web", "worker", "migrate"])
def test_an_unreachable_database_is_named_in_a_sentence(tmp_path: Path, command: str) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://handrail:s3cret-pw@127.0.0.1:{port}/handrail"
    result = run_handrail(
        command,
        cwd=tmp_path,
        DATABASE_URL=url,
        HANDRAIL_CONFIG=str(write(tmp_path / "handrail.yml", real_config())),
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
    )
    assert result.returncode == 2
    [line] = lines(result.stderr)
    assert line.startswith(
        f"handrail: DATABASE_URL: cannot use the database at postgresql://handrail:***@127.0.0.1:{port}/handrail "
        "(connection failed: "
    )
    assert line.endswith(
        "check that the server is running and that the host, port, database name and credentials are right; it "
        "should look like postgresql://user:password@host:5432/dbname or sqlite:///handrail.db"
    )
    assert "s3cret-pw" not in result.stderr

    missing = run_handrail("migrate", cwd=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    assert missing.returncode == 2
    assert lines(missing.stderr) == [
        f"handrail: DATABASE_URL: cannot use the database at sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'} "
        "(unable to open database file): check that its directory exists and can be written to; it should look "
        "like postgresql://user:password@host:5432/dbname or sqlite:///handrail.db"
    ]


@pytest.mark.parametrize("command", ["web", "worker"])
def test_a_control_url_without_the_webhook_secret_stops_the_start(tmp_path: Path, command: str) -> None:
    data = real_config()
    data["agents"]["lead-router"]["control_url"] = "https://agents.internal/handrail/control"
    result = run_handrail(
        command,
        cwd=tmp_path,
        HANDRAIL_CONFIG=str(write(tmp_path / "handrail.yml", data)),
        DATABASE_URL=f"sqlite:///{tmp_path / 'handrail.db'}",
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
    )
    assert result.returncode == 2
    assert lines(result.stderr) == [
        "handrail: HANDRAIL_WEBHOOK_SECRET: is not set, but agents.lead-router.control_url is (rollbacks and undos "
        "are signed with it): set it to a long random string, e.g. the output of openssl rand -hex 32"
    ]
    assert not (tmp_path / "handrail.db").exists(), "nothing may be created before the start is known good"


# --- make run ------------------------------------------------------------------------------------


def _make_run(workdir: Path, **variables: str) -> subprocess.Popen[str]:
    """`make run` from another directory, with the virtualenv running these tests (never rebuilt)."""
    venv = Path(sys.executable).parent.parent
    return subprocess.Popen(
        ["make", "-s", "-f", str(ROOT / "Makefile"), "run", f"VENV={venv}", "-o", f"{venv}/.installed"],
        cwd=workdir,
        env=handrail_env(**variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C reaches make, the shell, redis and handrail
    )


def _wait_until_serving(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "Application startup complete" in line:
            return seen
    raise AssertionError("make run ended before it served:\n" + "".join(seen[-30:]))


def _ctrl_c(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGINT)
    assert process.stdout is not None
    process.stdout.read()
    process.wait(60)


@pytest.fixture
def run_settings(tmp_path: Path, slack: FakeSlack) -> dict[str, str]:
    return {
        "HANDRAIL_CONFIG": str(write(tmp_path / "handrail.yml", real_config())),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'handrail.db'}",
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.base_url,
        "PORT": str(free_port()),
    }


def test_make_run_needs_no_redis_and_a_second_process_on_its_database_is_refused(
    tmp_path: Path, run_settings: dict[str, str]
) -> None:
    process = _make_run(tmp_path, **run_settings)
    try:
        _wait_until_serving(process)
        ready = httpx.get(f"http://127.0.0.1:{run_settings['PORT']}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"ready": True, "database": "ok"}
        second = run_handrail("web", cwd=tmp_path, **(run_settings | {"PORT": str(free_port())}))
        assert second.returncode == 2
        (line,) = [line for line in lines(second.stderr) if line.startswith("handrail:")]
        assert line.startswith("handrail: REDIS_URL: is not set, and another Handrail process (pid ")
        assert "Set REDIS_URL (one Redis for all) on every process, or stop the other one" in line
    finally:
        _ctrl_c(process)
    database = Database(run_settings["DATABASE_URL"])
    with database.transaction() as session:
        assert session.scalars(select(ProcessRow)).all() == [], "make run left its heartbeat row behind"
    database.dispose()


def test_the_operators_config_and_secrets_are_not_committed() -> None:
    for name in ("handrail.yml", ".env"):
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{name} is not in .gitignore"


def test_config_check_shows_an_agents_effective_alert_rules_and_refuses_bad_ones(tmp_path: Path) -> None:
    data = config_dict() | {"alerts": {"failure_rate": {"threshold": "10%"}, "silence": {"expected_every": "2h"}}}
    data["agents"]["lead-router"]["alerts"] = {"failure_rate": {"min_runs": 50}, "finance_channel": "C0FINANCE"}
    path = write(tmp_path / "handrail.yml", data)
    result = run_handrail("config-check", str(path), "--agent", "lead-router", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = {line.split(":")[0].strip(): line for line in lines(result.stdout)[2:]}
    assert "min_runs=50 " in shown["failure_rate"] and "threshold=0.1 (10%)" in shown["failure_rate"]
    assert "min_failures=3 " in shown["failure_rate"], "the keys not overridden keep the defaults"
    assert shown["failure_rate"].startswith("  failure_rate: on, to C0APPROVALS, U0OWNER (")
    assert shown["duplicates"].startswith("  duplicates: on, to C0APPROVALS, U0OWNER, U0MANAGER (severity=page ")
    assert shown["cost_spike"].startswith("  cost_spike: on, to C0APPROVALS, C0FINANCE (")
    assert "expected_every=2h" in shown["silence"] and shown["error_category"].startswith("  error_category: off")
    billing = run_handrail("config-check", str(path), "--agent", "billing-bot", cwd=tmp_path)
    assert "min_runs=20 " in billing.stdout and "threshold=0.1 (10%)" in billing.stdout

    data["agents"]["lead-router"]["alerts"] = {"failure_rate": {"window": "5m", "confirm_window": "10m"}}
    data["alerts"] = {"cost_spike": {"increase": "130%"}, "silence": {"expected_every": "3d"}}
    data["pagerduty"] = {"routing_key": "s3cretButShort"}
    bad = run_handrail("config-check", str(write(tmp_path / "bad.yml", data)), cwd=tmp_path)
    assert "pagerduty.routing_key: is not an Events API v2 integration key" in bad.stderr
    assert "s3cret" not in bad.stderr, "a secret, even a wrong one, is not shown"
    assert bad.returncode == 2 and bad.stdout == ""
    assert "confirm_window 10m is longer than window 5m" in bad.stderr
    assert "alerts.cost_spike.increase" in bad.stderr
    assert "expected_every 3d is longer than 1d" in bad.stderr
