import hashlib
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import (
    ConfigError,
    format_duration,
    load_config,
    load_settings,
    parse_config,
    parse_duration,
    placeholders,
)
from bot.policy import choose
from tests.helpers import config_dict, run_handrail


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_default_policy_takes_the_agents_approvers() -> None:
    config = parse_config(config_dict())
    agent = config.agents["lead-router"]
    applied = choose(config, "lead-router", "anything", {})
    assert applied.approvers == ("U0REVIEWER", "U0OWNER", "S0DEALDESK")
    assert agent.owners.escalation_manager == "U0MANAGER"
    assert agent.approval_timeout == timedelta(hours=24)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("token_sha256",), "not-a-digest", "agents.lead-router.token_sha256: must be the SHA-256"),
        (("channel",), "#approvals", 'agents.lead-router.channel: "#approvals" is not a Slack channel id: write'),
        (("owners", "primary"), "alice", 'agents.lead-router.owners.primary: "alice" is not a Slack user id: write'),
        (("approvers",), [], "agents.lead-router.approvers: is empty: list at least 1, e.g. approvers: [U0123ABCD"),
        (("approvers",), "U0X", "agents.lead-router.approvers: should be a list: write [U0X]"),
        (("chanel",), "C0X", "agents.lead-router.chanel: unknown key: did you mean channel?"),
        (("approval_timeout",), "soon", 'agents.lead-router.approval_timeout: "soon" is not a duration: write 5s, 15m'),
        (("approval_timeout",), "99999999999d", 'approval_timeout: "99999999999d" is too long: write at most 36500d'),
        (("approval_timeout",), float("inf"), "approval_timeout: .inf is too long"),
        (("limits", "actions_per_hour"), 0, "limits.actions_per_hour: 0 is out of range: write a number at least 1"),
        (("limits", "per_day"), 5, "limits.per_day: unknown key: remove it (the keys here are actions_per_hour, "),
        (("control_url",), "ftp://x", 'agents.lead-router.control_url: "ftp://x" is not an http:// or https:// URL'),
        (("owners",), None, "agents.lead-router.owners: is empty: give its settings, e.g. owners: {primary: U0"),
    ],
)
def test_a_bad_value_is_reported_with_its_key(path: tuple[str, ...], value: object, expected: str) -> None:
    data = config_dict()
    node = data["agents"]["lead-router"]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert expected in str(caught.value)


def test_a_missing_key_is_named() -> None:
    data = config_dict()
    del data["agents"]["billing-bot"]["owners"]
    with pytest.raises(ConfigError, match=r"agents\.billing-bot\.owners: is missing: add it, e\.g\. owners: \{primary"):
        parse_config(data)


def test_two_agents_cannot_share_a_token() -> None:
    data = config_dict()
    data["agents"]["billing-bot"]["token_sha256"] = data["agents"]["lead-router"]["token_sha256"]
    with pytest.raises(ConfigError, match=r"agents\.billing-bot\.token_sha256: is the same as agents\.lead-router\."):
        parse_config(data)


def test_unreadable_and_malformed_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yml: cannot read the file \(No such file or directory\): copy"):
        load_config(tmp_path / "missing.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("agents: [unclosed")
    with pytest.raises(ConfigError, match=r"broken\.yml:1: not valid YAML: .*: fix the syntax there"):
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


def test_web_with_half_the_slack_credentials_names_what_is_missing(tmp_path: Path) -> None:
    """None of them is local mode (tests/test_local_mode.py); some of them is a mistake."""
    result = run_handrail("web", cwd=tmp_path, HANDRAIL_CONFIG=str(tmp_path / "none.yml"), SLACK_BOT_TOKEN="xoxb-1")
    assert result.returncode == 2
    assert result.stderr == (
        "handrail: set SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN, for Socket Mode) from your Slack app's settings "
        "to start; see README.md\n"
    )
    result = run_handrail("web", cwd=tmp_path, SLACK_SIGNING_SECRET="s", SLACK_APP_TOKEN="xapp-1-A-1-abc")
    assert result.returncode == 2 and "set SLACK_BOT_TOKEN from" in result.stderr


def test_web_with_a_bad_config_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    data = config_dict()
    data["agents"]["lead-router"]["channel"] = "approvals"
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    env = {
        "HANDRAIL_CONFIG": str(path),
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    result = run_handrail("web", cwd=tmp_path, **env)
    assert result.returncode == 2
    assert "agents.lead-router.channel" in result.stderr
    assert not (tmp_path / "x.db").exists(), "nothing may be created before the config is known good"


def test_config_check_and_webhook_key(config_file: Path) -> None:
    def cli(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
        return run_handrail(*args, cwd=config_file.parent, HANDRAIL_CONFIG=str(config_file), **variables)

    checked = cli("config-check")
    assert checked.returncode == 0 and "lead-router" in checked.stdout
    assert "HANDRAIL_WEBHOOK_SECRET" in cli("webhook-key", "lead-router").stderr
    keyed = cli("webhook-key", "lead-router", HANDRAIL_WEBHOOK_SECRET="k")
    other = cli("webhook-key", "billing-bot", HANDRAIL_WEBHOOK_SECRET="k")
    assert len(keyed.stdout.strip()) == 64 and keyed.stdout != other.stdout
    assert cli("webhook-key", "nobody", HANDRAIL_WEBHOOK_SECRET="k").returncode == 2


POLICIES = [
    {"match": "opportunity.update_amount", "mode": "human_only"},
    {
        "match": "quote.*",
        "when": {"fact": "discount_pct", "gt": 8},
        "mode": "approve",
        "approvers": ["S0DEALDESK"],
        "quorum": 2,
        "timeout": "4h",
        "escalation": [
            {"after": "30m", "notify": "primary"},
            {"after": "1h", "notify": "backup"},
            {"after": "2h", "notify": "escalation_manager"},
        ],
    },
    {"match": "lead.enrich", "mode": "auto", "sample": 0.05},
]


def with_policies(policies: list[dict[str, Any]], agent_policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data = config_dict()
    data["policies"] = policies
    if agent_policies is not None:
        data["agents"]["billing-bot"]["policies"] = agent_policies
    return data


def test_the_first_matching_policy_wins_agent_policies_first() -> None:
    config = parse_config(with_policies(POLICIES, [{"match": "quote.*", "mode": "auto"}]))
    quote = choose(config, "lead-router", "quote.create", {"discount_pct": 12})
    assert (quote.source, quote.mode, quote.approvers, quote.quorum, quote.timeout) == (
        "policies.1",
        "approve",
        ("S0DEALDESK",),
        2,
        timedelta(hours=4),
    )
    assert [(s.after_s, s.notify) for s in quote.escalation] == [
        (1800, "primary"),
        (3600, "backup"),
        (7200, "escalation_manager"),
    ]
    assert quote.execute_window == timedelta(minutes=15)
    assert choose(config, "billing-bot", "quote.create", {"discount_pct": 12}).source == "agents.billing-bot.policies.0"
    assert choose(config, "lead-router", "opportunity.update_amount", {}).mode == "human_only"
    assert choose(config, "lead-router", "lead.enrich", {}).sample == 0.05


def test_unmatched_actions_and_failed_conditions_get_the_default() -> None:
    config = parse_config(with_policies(POLICIES))
    for action, facts in [("quote.create", {"discount_pct": 8}), ("ticket.close", {})]:
        applied = choose(config, "lead-router", action, facts)
        assert (applied.source, applied.mode, applied.quorum, applied.timeout) == (
            "default",
            "approve",
            1,
            timedelta(hours=24),
        )
        assert applied.approvers == ("U0REVIEWER", "U0OWNER", "S0DEALDESK")
        assert [(s.after_s, s.notify) for s in applied.escalation] == [
            (900, "primary"),
            (1800, "backup"),
            (3600, "escalation_manager"),
        ]


def test_a_missing_fact_sends_the_request_to_people_never_to_auto() -> None:
    config = parse_config(with_policies([{"match": "refund.*", "when": {"fact": "amount", "lt": 100}, "mode": "auto"}]))
    assert choose(config, "lead-router", "refund.issue", {"amount": 50}).mode == "auto"
    assert choose(config, "lead-router", "refund.issue", {"amount": 500}).mode == "approve"
    missing = choose(config, "lead-router", "refund.issue", {})
    assert (missing.mode, missing.source) == ("approve", "default")
    assert missing.note == "policies.0 needs the fact amount, which the request did not give"


@pytest.mark.parametrize(
    ("operator", "value", "matches"),
    [("gt", 10, False), ("gte", 10, True), ("lt", 10, False), ("lte", 10, True), ("eq", 10, True), ("eq", 9.5, False)],
)
def test_conditions_compare_numbers(operator: str, value: float, matches: bool) -> None:
    config = parse_config(with_policies([{"match": "*", "when": [{"fact": "n", operator: value}], "mode": "auto"}]))
    assert (choose(config, "lead-router", "x", {"n": 10}).mode == "auto") is matches


def test_the_default_ladder_leaves_out_steps_the_agent_cannot_take() -> None:
    data = config_dict()
    data["agents"]["billing-bot"]["owners"] = {"primary": "U0OWNER"}
    data["agents"]["billing-bot"]["approval_timeout"] = "20m"
    applied = choose(parse_config(data), "billing-bot", "x", {})
    assert [(s.after_s, s.notify) for s in applied.escalation] == [(900, "primary")]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            {"match": "x", "mode": "sometimes"},
            'policies.0.mode: "sometimes" is not allowed here: write auto, approve or',
        ),
        ({"match": "x", "mode": "auto", "quorum": 2}, "policies.0: quorum cannot be used with mode auto: remove it"),
        ({"match": "x", "mode": "approve", "sample": 0.1}, "policies.0: sample cannot be used with mode approve"),
        (
            {"match": "x", "mode": "human_only", "timeout": "1h"},
            "policies.0: timeout cannot be used with mode human_only",
        ),
        (
            {"match": "x", "mode": "auto", "sample": 1.5},
            "policies.0.sample: 1.5 is out of range: write a number at most 1",
        ),
        (
            {"match": "x", "mode": "auto", "when": {"fact": "n"}},
            "policies.0.when.0: a condition compares with exactly one of gt, gte, lt, lte, eq, and this one has none",
        ),
        ({"match": "x", "mode": "auto", "when": {"fact": "n", "gt": 1, "lt": 5}}, "and this one has gt and lt: write"),
        (
            {"match": "x", "mode": "auto", "when": {"fact": "n", "gt": float("nan")}},
            "policies.0.when.0.gt: .nan is not a number: write one, e.g. gt: 8",
        ),
        (
            {
                "match": "x",
                "mode": "approve",
                "escalation": [{"after": "1h", "notify": "primary"}, {"after": "30m", "notify": "backup"}],
            },
            "policies.0: escalation steps must come in order",
        ),
        (
            {"match": "x", "mode": "approve", "escalation": [{"after": "1h", "notify": "boss"}]},
            'policies.0.escalation.0.notify: "boss" is not allowed here: write primary, backup or escalation_manager',
        ),
        (
            {"match": "x", "mode": "approve", "timeout": "1h", "escalation": [{"after": "2h", "notify": "primary"}]},
            "policies.0.escalation.0: the step after 2h would come after the request expires (the policy's timeout, "
            "1h; agent lead-router): make the step earlier or the timeout longer",
        ),
        (
            {"match": "x", "mode": "approve", "approvers": ["U0A", "U0B"], "quorum": 3},
            "policies.0.quorum: quorum 3 needs more approvers than the 2 listed (agent lead-router): lower",
        ),
        ({"match": "x", "mode": "approve", "timeout": "soon"}, 'policies.0.timeout: "soon" is not a duration'),
        (
            {"match": "x", "mode": "approve", "approvers": ["alice"]},
            'policies.0.approvers.0: "alice" is not a Slack user or user group id: write a member id (U0123ABCD)',
        ),
        ({"match": "x", "mode": "approve", "quorom": 2}, "policies.0.quorom: unknown key: did you mean quorum?"),
    ],
)
def test_a_bad_policy_is_reported_with_its_key(policy: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_policies([policy]))
    assert expected in str(caught.value)


def test_a_ladder_naming_an_owner_the_agent_lacks_is_refused() -> None:
    data = with_policies([{"match": "x", "mode": "approve", "escalation": [{"after": "1h", "notify": "backup"}]}])
    data["agents"]["billing-bot"]["owners"] = {"primary": "U0OWNER"}
    with pytest.raises(
        ConfigError,
        match=r"policies\.0\.escalation\.0\.notify: the step notifies backup, but agent billing-bot has no "
        r"owners\.backup: add owners\.backup to the agent, or notify an owner it has",
    ):
        parse_config(data)


def test_config_check_shows_which_policy_a_sample_action_hits(tmp_path: Path) -> None:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(with_policies(POLICIES)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_handrail(*args, cwd=tmp_path)

    shown = cli(
        "config-check",
        str(path),
        "--agent",
        "lead-router",
        "--action",
        "quote.create",
        "--fact",
        "discount_pct=12",
    )
    assert shown.returncode == 0, shown.stderr
    assert (
        "lead-router quote.create: policies.1 (match 'quote.*') -> approve; approvers S0DEALDESK; quorum 2; "
        "timeout 4h; ladder 30m primary, 1h backup, 2h escalation_manager; execute within 15m"
    ) in shown.stdout
    cheap = cli("config-check", str(path), "--agent", "lead-router", "--action", "lead.enrich")
    assert "policies.2 (match 'lead.enrich') -> auto; 5% posted for review" in cheap.stdout
    assert (
        "needs the fact discount_pct"
        in cli("config-check", str(path), "--agent", "lead-router", "--action", "quote.create").stdout
    )
    bad = cli("config-check", str(path), "--agent", "lead-router", "--action", "q", "--fact", "d=lots")
    assert (bad.returncode, "write NAME=NUMBER" in bad.stderr) == (2, True)
    assert "give both --agent and --action" in cli("config-check", str(path), "--action", "q").stderr
    assert "no agent 'nobody'" in cli("config-check", str(path), "--agent", "nobody", "--action", "q").stderr


def test_roles_name_users_or_groups_and_all_is_no_agent_id() -> None:
    with pytest.raises(ConfigError, match=r'roles\.oncall\.0: "@alice" is not a Slack user or user group id'):
        parse_config(config_dict() | {"roles": {"oncall": ["@alice"]}})
    with pytest.raises(ConfigError, match=r"roles\.interns: unknown key: remove it \(the keys here are oncall, "):
        parse_config(config_dict() | {"roles": {"interns": ["U0X"]}})
    data = config_dict()
    data["agents"]["all"] = data["agents"].pop("billing-bot")
    with pytest.raises(ConfigError, match=r"agents\.all: `all` cannot be an agent id"):
        parse_config(data)


def test_the_shipped_example_config_loads_with_its_policies() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "handrail.example.yml")
    assert [p.mode for p in config.policies] == ["human_only", "approve", "auto"]
    assert config.roles.oncall == ("S0ONCALL",) and config.agents["lead-router"].limits.actions_per_run == 50
    assert choose(config, "lead-router", "quote.create", {"discount_pct": 12}).quorum == 2


def test_anchors_and_merge_keys_are_not_taken_for_keys_written_twice(tmp_path: Path) -> None:
    agent = config_dict()["agents"]["lead-router"]
    text = (
        "agents:\n"
        f"  lead-router: &agent {json.dumps(agent)}\n"
        "  billing-bot:\n"
        "    <<: *agent\n"
        f"    token_sha256: {hashlib.sha256(b'other').hexdigest()}\n"
        "    name: Billing bot\n"
        "policies:\n"
        "  - &quotes {match: 'quote.*', mode: approve, quorum: 1}\n"
        "  - *quotes\n"
    )
    config = load_config(write(tmp_path / "handrail.yml", text))
    assert config.agents["billing-bot"].name == "Billing bot"
    assert config.agents["billing-bot"].channel == "C0APPROVALS"
    assert len(config.policies) == 2


def test_a_key_written_twice_anywhere_is_refused_with_both_lines(tmp_path: Path) -> None:
    text = "agents:\n  lead-router:\n    name: A\n    name: B\nroles: {oncall: [U0X], oncall: [U0Y]}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "handrail.yml", text))
    assert [(p.key, p.line) for p in caught.value.problems] == [("agents.lead-router.name", 4), ("roles.oncall", 5)]
    assert "on lines 3 and 4: keep one" in str(caught.value)
    assert "roles.oncall: is written twice, on line 5: keep one" in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(7200, "2h"), (900, "15m"), (5400, "90m"), (86400, "1d"), (90, "90s"), (2.5, "2.5s")]
)
def test_durations_print_as_the_config_writes_them(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_placeholders_are_found_and_real_values_are_not() -> None:
    data = config_dict()
    data["agents"]["lead-router"]["token_sha256"] = "0" * 64
    data["agents"]["billing-bot"]["token_sha256"] = hashlib.sha256(b"").hexdigest()
    data["agents"]["billing-bot"]["control_url"] = "https://handrail.example.com/control"
    found = {p.key: p.message for p in placeholders(parse_config(data))}
    assert found["agents.lead-router.token_sha256"].startswith("is a placeholder (one digit repeated)")
    assert found["agents.billing-bot.token_sha256"].startswith("is the SHA-256 of an empty token")
    assert found["agents.billing-bot.control_url"].endswith("a host reserved for examples: write your real URL")
    assert (
        found["agents.lead-router.channel"]
        == "C0APPROVALS is an id from the example config: write the id from your workspace"
    )

    real = config_dict()
    for agent in real["agents"].values():
        agent |= {"channel": "C07REAL", "owners": {"primary": "U07ALICE"}, "approvers": ["U07ALICE", "S07TEAM"]}
        agent["control_url"] = "https://agents.internal.example-corp.com/control"
        agent["callback_urls"] = ["https://agents.internal.example-corp.com/hooks/"]
    assert placeholders(parse_config(real)) == []


def test_a_bad_environment_is_a_config_error_naming_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@db/handrail")
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    monkeypatch.setenv("PORT", "70000")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    assert [p.key for p in caught.value.problems] == ["DATABASE_URL", "REDIS_URL", "PORT"]
    assert "hunter2" not in str(caught.value) and '"mysql://root:***@db/handrail"' in str(caught.value)
