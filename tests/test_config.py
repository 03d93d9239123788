import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.config import ConfigError, load_config, parse_config, parse_duration
from tests.conftest import config_dict


def test_the_documented_example_loads_and_splits_users_from_groups() -> None:
    config = parse_config(config_dict())
    agent = config.agents["lead-router"]
    assert agent.approver_users == {"U0REVIEWER", "U0OWNER"}
    assert agent.approver_groups == ("S0DEALDESK",)
    assert agent.owners.escalation_manager == "U0MANAGER"
    assert agent.approval_timeout == timedelta(hours=24)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("token_sha256",), "not-a-digest", "agents.lead-router.token_sha256: must be the SHA-256"),
        (("channel",), "#approvals", "agents.lead-router.channel: String should match pattern"),
        (("owners", "primary"), "alice", "agents.lead-router.owners.primary: String should match pattern"),
        (("approvers",), [], "agents.lead-router.approvers: List should have at least 1 item"),
        (("chanel",), "C0X", "agents.lead-router.chanel: unknown key"),
        (("approval_timeout",), "soon", "agents.lead-router.approval_timeout: 'soon' is not a duration"),
    ],
)
def test_a_bad_value_is_reported_with_its_key(path: tuple[str, ...], value: object, expected: str) -> None:
    data = config_dict()
    node = data["agents"]["lead-router"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert expected in str(caught.value)


def test_a_missing_key_is_named() -> None:
    data = config_dict()
    del data["agents"]["billing-bot"]["owners"]
    with pytest.raises(ConfigError, match=r"agents\.billing-bot\.owners: Field required"):
        parse_config(data)


def test_two_agents_cannot_share_a_token() -> None:
    data = config_dict()
    data["agents"]["billing-bot"]["token_sha256"] = data["agents"]["lead-router"]["token_sha256"]
    with pytest.raises(ConfigError, match="share a token_sha256"):
        parse_config(data)


def test_unreadable_and_malformed_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HANDRAIL_CONFIG: cannot read"):
        load_config(tmp_path / "missing.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("agents: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listed)


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("15m", 900), ("4h", 14400), ("1d", 86400), ("30", 30), (2.5, 2.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0", "-5s", "5 minutes", "", "1w"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env, timeout=60)


def test_web_without_slack_credentials_names_what_is_missing(tmp_path: Path) -> None:
    result = _cli("web", env={"PATH": "/usr/bin:/bin", "HANDRAIL_CONFIG": str(tmp_path / "none.yml")})
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET" in result.stderr


def test_web_with_a_bad_config_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    data = config_dict()
    data["agents"]["lead-router"]["channel"] = "approvals"
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    env = {"PATH": "/usr/bin:/bin", "HANDRAIL_CONFIG": str(path), "SLACK_BOT_TOKEN": "xoxb-1",
           "SLACK_SIGNING_SECRET": "s", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = _cli("web", env=env)
    assert result.returncode == 2
    assert "agents.lead-router.channel" in result.stderr
    assert not (tmp_path / "x.db").exists(), "nothing may be created before the config is known good"


def test_config_check_and_webhook_key(config_file: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HANDRAIL_CONFIG": str(config_file)}
    checked = _cli("config-check", env=env)
    assert checked.returncode == 0 and "lead-router" in checked.stdout
    assert "HANDRAIL_WEBHOOK_SECRET" in _cli("webhook-key", "lead-router", env=env).stderr
    keyed = _cli("webhook-key", "lead-router", env=env | {"HANDRAIL_WEBHOOK_SECRET": "k"})
    other = _cli("webhook-key", "billing-bot", env=env | {"HANDRAIL_WEBHOOK_SECRET": "k"})
    assert len(keyed.stdout.strip()) == 64 and keyed.stdout != other.stdout
    assert _cli("webhook-key", "nobody", env=env | {"HANDRAIL_WEBHOOK_SECRET": "k"}).returncode == 2
