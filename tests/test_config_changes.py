"""The config lane: a process starting with a config file unlike the last one records one
`config.changed` event (who deployed it, the file's SHA-256, a field-level diff with secrets
masked), however many replicas start at once; an unchanged file records nothing; `/agent status`
says when the config last changed."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot import cli
from bot.clock import ManualClock
from bot.config import ConfigError, Settings, load_settings, parse_config
from bot.config_changes import MASK, ConfigChange, note_start
from storage.db import Database, migrate
from storage.tables import AuditEvent, ConfigState
from tests import slackreq
from tests.helpers import T0, Running, config_dict

ROUTING_KEY = "R" * 31 + "1"
NEW_ROUTING_KEY = "S" * 31 + "2"
ADMIN_HASH = hashlib.sha256(b"the admin token").hexdigest()


def config_bytes(**changes: Any) -> tuple[bytes, dict[str, Any]]:
    data = config_dict() | {"pagerduty": {"routing_key": ROUTING_KEY}, "admin_token_sha256": ADMIN_HASH}
    data["agents"]["lead-router"]["policies"] = [{"match": "quote.*", "mode": "approve", "quorum": 1}]
    data["agents"]["lead-router"]["control_url"] = "https://hooks:hunter2@agents.example/control?key=k1"
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return yaml.safe_dump(data).encode(), data


def start(db: Database, data: bytes, raw: dict[str, Any], by: str | None = "ci@pipeline") -> ConfigChange | None:
    with db.transaction() as session:
        return note_start(session, data=data, config=parse_config(raw), deployed_by=by, now=T0)


def events(db: Database) -> list[AuditEvent]:
    with db.transaction() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.event == "config.changed").order_by(AuditEvent.id))
        )


def replicas_start(url: str, data: bytes, raw: dict[str, Any], count: int) -> list[ConfigChange | None]:
    """`count` processes (a database connection pool each) recording the config at the same moment."""
    databases = [Database(url) for _ in range(count)]
    barrier = threading.Barrier(count)
    results: list[ConfigChange | None] = [None] * count
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = start(databases[i], data, raw)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for database in databases:
        database.dispose()
    assert not errors, errors
    return results


def test_replicas_starting_together_record_each_change_once(database_url: str) -> None:
    db = Database(database_url)
    migrate(db.engine)
    first, raw = config_bytes()
    won = replicas_start(database_url, first, raw, 8)
    assert sum(change is not None for change in won) == 1, "the first config: one insert wins"
    assert len(events(db)) == 1

    assert replicas_start(database_url, first, raw, 8) == [None] * 8, "the same file again: nothing"
    assert len(events(db)) == 1

    second, raw2 = config_bytes(**{"agents.lead-router.policies.0.quorum": 2})
    won = replicas_start(database_url, second, raw2, 8)
    assert sum(change is not None for change in won) == 1, "a changed file: one compare-and-set wins"
    recorded = events(db)
    assert len(recorded) == 2
    event = recorded[-1]
    assert event.actor == "deploy:ci@pipeline" and event.object_type == "config"
    assert event.object_id == hashlib.sha256(second).hexdigest()[:12] and event.agent is None
    assert event.after == {
        "sha256": hashlib.sha256(second).hexdigest(),
        "previous_sha256": hashlib.sha256(first).hexdigest(),
        "diff": [{"path": "agents.lead-router.policies.0.quorum", "before": 1, "after": 2}],
    }
    with db.transaction() as session:
        state = session.scalars(select(ConfigState)).one()
        assert state.sha256 == hashlib.sha256(second).hexdigest() and state.deployed_by == "ci@pipeline"
    db.dispose()


def test_the_first_config_and_every_diff_keep_secrets_masked(db: Database) -> None:
    first, raw = config_bytes()
    change = start(db, first, raw, by=None)
    assert change is not None and change.deployed_by is None
    second, raw2 = config_bytes(
        **{
            "pagerduty.routing_key": NEW_ROUTING_KEY,
            "agents.billing-bot.approval_timeout": "2h",
            "agents.lead-router.control_url": "https://hooks:hunter3@agents.example/control?key=k2",
            "roles": {"oncall": ["U0ONCALL"]},
        }
    )
    assert start(db, second, raw2) is not None
    initial, changed = events(db)
    assert initial.actor == "system" and initial.after is not None and initial.after["previous_sha256"] is None
    assert [entry["path"] for entry in initial.after["diff"]][:2] == ["agents", "policies"], "the whole config, once"
    assert changed.after is not None
    diff = {entry["path"]: (entry["before"], entry["after"]) for entry in changed.after["diff"]}
    assert diff == {
        "agents.billing-bot.approval_timeout": ("1d", "2h"),
        "agents.lead-router.control_url": (
            f"https://hooks:{MASK}@agents.example/control?{MASK}",
            f"https://hooks:{MASK}@agents.example/control?{MASK}",
        ),
        "roles.oncall.0": (None, "U0ONCALL"),
        "pagerduty.routing_key": (MASK, MASK),
    }
    with db.transaction() as session:
        stored = json.dumps(session.scalars(select(ConfigState)).one().snapshot)
    written = json.dumps([initial.after, initial.before, changed.after, changed.before])
    for secret in (ROUTING_KEY, NEW_ROUTING_KEY, ADMIN_HASH, "hunter2", "hunter3", "k1", "k2"):
        assert secret not in written and secret not in stored, secret
    for agent in raw["agents"].values():
        assert agent["token_sha256"] not in written + stored


def test_the_command_line_records_the_config_it_starts_with_and_status_shows_it(
    running: Running, settings: Settings
) -> None:
    deployed = settings.model_copy(update={"handrail_deployed_by": "ci@pipeline"})
    change = cli.note_config(running.services, deployed)
    assert change is not None and change.sha256 == hashlib.sha256(settings.handrail_config.read_bytes()).hexdigest()
    assert cli.note_config(running.services, deployed) is None, "a restart with the same file"
    answer = running.slack_post(slackreq.slash_command(text="status lead-router", user_id="U0ANYONE"))
    text = answer.json()["text"] if answer.headers["content-type"].startswith("application/json") else answer.text
    assert f"Config last changed <!date^{int(T0.timestamp())}^" in text
    assert f"by `ci@pipeline` (`{change.short}`)" in text


def test_a_deployer_is_a_short_printable_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for value, expected in (("", None), ("  alice  ", "alice"), ("ci@github", "ci@github")):
        monkeypatch.setenv("HANDRAIL_DEPLOYED_BY", value)
        assert load_settings(env_file=None).handrail_deployed_by == expected
    for bad in ("x" * 91, "bob\x1b[31m"):
        monkeypatch.setenv("HANDRAIL_DEPLOYED_BY", bad)
        with pytest.raises(ConfigError) as raised:
            load_settings(env_file=None)
        assert "HANDRAIL_DEPLOYED_BY" in str(raised.value) and "90 printable characters" in str(raised.value)


def test_a_config_status_line_escapes_the_deployer() -> None:
    from bot.cards.agent import config_line

    line = config_line(ConfigChange("ab" * 32, ManualClock(T0).now(), "<!channel> `x`"))
    assert "<!channel>" not in line and "&lt;!channel&gt;" in line and line.endswith("(`abababababab`)")
