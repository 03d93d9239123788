"""`handrail worker`: the sweeps and the outbox without the web server."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.approvals.create import create as create_approval
from bot.config import load_config
from local.slack import FakeSlack
from storage.db import Database, migrate
from tests.helpers import SIGNING_SECRET, handrail_env, request, run_handrail


def test_the_worker_takes_due_steps_and_sends_them(
    tmp_path: Path, config_file: Path, slack: FakeSlack, redis_url: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'handrail.db'}"
    db = Database(database_url)
    migrate(db.engine)
    with db.transaction() as session:  # asked 16 minutes ago: the primary owner's step is due
        created, _ = create_approval(
            session, config=load_config(config_file), request=request(), now=datetime.now(UTC) - timedelta(minutes=16)
        )
    db.dispose()
    env = handrail_env(
        HANDRAIL_CONFIG=str(config_file),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.base_url,
        HANDRAIL_SWEEP_INTERVAL="0.2",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        calls = slack.wait_for(lambda calls: any(c.params.get("channel") == "U0OWNER" for c in calls), timeout=30)
    finally:
        worker.kill()
        worker.wait(10)
    [card] = [
        c
        for c in calls
        if c.method == "chat.postMessage" and c.params["channel"] == "C0APPROVALS" and "thread_ts" not in c.params
    ]
    assert created.id in str(card.params["blocks"])
    [dm] = [c for c in calls if c.params.get("channel") == "U0OWNER"]
    assert "no decision for 15 min" in dm.params["text"]


def test_the_worker_needs_slack_credentials(tmp_path: Path) -> None:
    result = run_handrail("worker", cwd=tmp_path, HANDRAIL_CONFIG=str(tmp_path / "none.yml"))
    assert result.returncode == 2 and "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET" in result.stderr
