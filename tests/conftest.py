"""Test fixtures: a real redis-server, a real PostgreSQL, the fake Slack Web API, and the real
Handrail server on a loopback port with an injected clock. None of them sees the developer's own
settings: the variables Handrail reads are removed from the environment for the whole session,
Settings are built without a `.env`, and commands run in directories of their own
(tests/helpers.py: run_handrail)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.clock import ManualClock
from bot.config import Settings
from local.slack import FakeSlack
from storage.db import Database, migrate
from tests.helpers import (
    SIGNING_SECRET,
    T0,
    WEBHOOK_SECRET,
    AgentEndpoint,
    Running,
    config_dict,
    read_by_handrail,
    reset_postgres,
    serve,
)
from tests.servers import start_postgres, start_redis


@pytest.fixture(scope="session", autouse=True)
def _without_the_developers_settings() -> Iterator[None]:
    """HANDRAIL_*, SLACK_*, DATABASE_URL, REDIS_URL and PORT from the developer's shell reach
    neither the code under test nor the processes the tests start."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if read_by_handrail(name)]:
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        url, stop = start_redis()
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url
    stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        url, stop = start_postgres()
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url
    stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Storage tests run on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'handrail.db'}"
    url = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(scope="session")
def slack_server() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def slack(slack_server: FakeSlack) -> Iterator[FakeSlack]:
    slack_server.reset()
    slack_server.usergroup_members["S0DEALDESK"] = ["U0DEALDESK1", "U0DEALDESK2"]
    yield slack_server
    assert slack_server.violations == [], "the bot made calls Slack would reject"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_dict()))
    return path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_shared` run twice: with Redis, and with what Redis holds kept in the
    process (no REDIS_URL). Tests marked `both_databases` run their server on SQLite and on
    PostgreSQL."""
    if "shared" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_shared"):
        metafunc.parametrize("shared", ["redis", "in-process"], indirect=True)
    if "database" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """The server's database: "sqlite" unless the test is marked `both_databases`."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def shared(request: pytest.FixtureRequest) -> str:
    """Where the server keeps what Redis holds: "redis" unless the test is marked `both_shared`."""
    return getattr(request, "param", "redis")


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, slack: FakeSlack, shared: str, database: str, config_file: Path
) -> Settings:
    redis_url = request.getfixturevalue("redis_url") if shared == "redis" else None
    database_url = f"sqlite:///{tmp_path / 'handrail.db'}"
    if database == "postgresql":
        database_url = request.getfixturevalue("postgres_url")
        reset_postgres(database_url)
    return Settings(
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.base_url,
        database_url=database_url,
        redis_url=redis_url,
        handrail_config=config_file,
        handrail_webhook_secret=WEBHOOK_SECRET,
        # Slack's pacing is tested in test_pacing.py; elsewhere it would only make tests wait.
        handrail_slack_post_rate=1000,
        handrail_slack_post_burst=100,
        handrail_slack_update_rate=1000,
        handrail_slack_update_burst=100,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def running(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Running]:
    yield from serve(settings, clock, slack)


@pytest.fixture
def agent_endpoint() -> Iterator[AgentEndpoint]:
    endpoint = AgentEndpoint()
    yield endpoint
    endpoint.server.shutdown()
