"""Per-agent rate limits on the agents' API: exact at the boundary, per agent, never on the gate,
overridable and off per agent, with Retry-After from the injected clock, counted together by
replicas in Redis, and in SQL (SQLite and PostgreSQL) when Redis cannot be reached."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from anyio import CapacityLimiter
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import ConfigError, Settings, load_config, parse_config
from bot.control import pause as pausing
from bot.lanes import Lane
from bot.limits import RateLimited, RateLimiter
from local.slack import FakeSlack
from storage.db import Database
from storage.redis_store import RedisRateCounter
from storage.tables import Approval, RateCount
from tests.helpers import AGENT_TOKENS, T0, Running, config_dict, serve
from tests.samples import REQUEST
from tests.servers import free_port, start_redis

ROOT = Path(__file__).resolve().parents[1]
OPS_TOKEN = "tok-ops-bot-3"
TOKENS = AGENT_TOKENS | {"ops-bot": OPS_TOKEN}
PER_SECOND, PER_MINUTE, BILLING_PER_MINUTE = 5, 3, 2


def limited_config() -> dict[str, Any]:
    """Every agent: 5 requests a second, 3 approvals a minute. billing-bot: 2 approvals a minute
    and no limit on requests. ops-bot: the defaults."""
    data = config_dict()
    data["limits"] = {"requests_per_second": PER_SECOND, "approvals_per_minute": PER_MINUTE}
    data["agents"]["billing-bot"]["limits"] = {"requests_per_second": "off", "approvals_per_minute": BILLING_PER_MINUTE}
    data["agents"]["ops-bot"] = data["agents"]["billing-bot"] | {
        "name": "Ops bot",
        "token_sha256": hashlib.sha256(OPS_TOKEN.encode()).hexdigest(),
        "limits": {},
    }
    return data


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(limited_config()))
    return path


@pytest.fixture(autouse=True)
def _fresh_counters(redis_url: str) -> None:
    """Every test starts at T0: the counters of earlier tests' windows must not be read again."""
    redis = Redis.from_url(redis_url)
    for key in redis.scan_iter("handrail:rate:*"):
        redis.delete(key)
    redis.close()


def client(url: str, agent: str = "lead-router") -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKENS[agent]}"}, timeout=30)


def versions(url: str, agent: str = "lead-router") -> httpx.Response:
    """A request that counts against requests_per_second only."""
    with client(url, agent) as http:
        return http.get(f"/v1/agents/{agent}/versions")


def ask(url: str, agent: str = "lead-router", **overrides: Any) -> httpx.Response:
    with client(url, agent) as http:
        return http.post("/v1/approvals", json=REQUEST | {"agent": agent} | overrides)


def refused(response: httpx.Response) -> tuple[str, str]:
    """A 429 rate_limited: (Retry-After, message)."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    return response.headers["Retry-After"], error["message"]


def approvals(running: Running) -> int:
    with running.services.db.transaction() as session:
        return session.scalar(select(func.count()).select_from(Approval)) or 0


def rate_rows(db: Database) -> list[tuple[str, int, int]]:
    with db.transaction() as session:
        return [(r.key, r.window_start, r.count) for r in session.scalars(select(RateCount).order_by(RateCount.key))]


@pytest.mark.both_shared
def test_requests_per_second_lets_exactly_the_limit_through_in_each_second(running: Running) -> None:
    running.clock.set(T0 + timedelta(seconds=0.25))
    assert [versions(running.url).status_code for _ in range(PER_SECOND)] == [200] * PER_SECOND
    assert httpx.get(f"{running.url}/v1/agents/lead-router/versions").status_code == 401, "not counted: no agent"
    retry_after, message = refused(versions(running.url))
    assert retry_after == "1"
    assert message == (
        "lead-router has sent 5 requests this second, its limit (limits.requests_per_second: 5); "
        "retry in 1s, at 2026-11-02T10:00:01+00:00"
    )
    running.clock.set(T0 + timedelta(seconds=0.999))
    refused(versions(running.url))
    running.clock.set(T0 + timedelta(seconds=1))  # the next window
    assert [versions(running.url).status_code for _ in range(PER_SECOND + 1)] == [200] * PER_SECOND + [429]


@pytest.mark.both_shared
def test_approvals_per_minute_refuses_the_next_one_until_the_minute_ends_and_stores_nothing(
    running: Running, slack: FakeSlack
) -> None:
    running.clock.set(T0 + timedelta(seconds=15.2))
    assert [ask(running.url).status_code for _ in range(PER_MINUTE)] == [201] * PER_MINUTE
    retry_after, message = refused(ask(running.url, idempotency_key="a-fourth"))
    assert retry_after == "45"
    assert message == (
        "lead-router has asked for 3 approvals this minute, its limit (limits.approvals_per_minute: 3); "
        "retry in 45s, at 2026-11-02T10:01:00+00:00"
    )
    assert approvals(running) == PER_MINUTE
    with client(running.url) as http:  # refused before the body is read: not a 400 for its JSON
        refused(http.post("/v1/approvals", content=b"{not json", headers={"Content-Type": "application/json"}))
    # The cards go out before time jumps: a card claimed after the jump would have waited 44 s by
    # the clock, and a server behind with its cards sheds requests (503), which is not this test.
    running.deliver_due()
    running.clock.set(T0 + timedelta(seconds=59.5))
    assert refused(ask(running.url))[0] == "1"
    running.clock.set(T0 + timedelta(seconds=60))
    assert ask(running.url, idempotency_key="a-fourth").status_code == 201
    assert approvals(running) == PER_MINUTE + 1


@pytest.mark.both_shared
def test_replays_of_an_idempotency_key_count_as_approval_requests(running: Running) -> None:
    first = ask(running.url, idempotency_key="run-1-step-1")
    replays = [ask(running.url, idempotency_key="run-1-step-1") for _ in range(PER_MINUTE - 1)]
    assert [first.status_code] + [r.status_code for r in replays] == [201] + [200] * (PER_MINUTE - 1)
    refused(ask(running.url, idempotency_key="run-1-step-1"))


@pytest.mark.both_shared
def test_a_refused_approval_request_takes_nothing_from_the_requests_per_second(running: Running) -> None:
    """The limits are counted all or none: the 4th approval request, refused by approvals_per_minute,
    leaves the second's count at 3, so 2 more requests pass in it."""
    assert [ask(running.url).status_code for _ in range(PER_MINUTE)] == [201] * PER_MINUTE
    refused(ask(running.url))
    assert [versions(running.url).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.both_shared
def test_one_agents_flood_does_not_limit_another(running: Running) -> None:
    for _ in range(PER_SECOND + 3):
        versions(running.url)
    for _ in range(PER_MINUTE):
        ask(running.url)
    refused(versions(running.url))
    assert [versions(running.url, "ops-bot").status_code for _ in range(PER_SECOND)] == [200] * PER_SECOND
    assert [ask(running.url, "billing-bot").status_code for _ in range(BILLING_PER_MINUTE)] == [201, 201]


@pytest.mark.both_shared
def test_the_gate_is_never_rate_limited_and_tells_a_looping_agent_it_is_paused(running: Running) -> None:
    for _ in range(PER_SECOND):
        versions(running.url)
    refused(versions(running.url))
    with client(running.url) as http:
        assert all(http.get("/v1/agents/lead-router/gate").json()["allowed"] for _ in range(3 * PER_SECOND))
        services = running.services
        running.call(
            lambda: services.run(
                pausing.pause,
                config=services.config,
                agent_id="lead-router",
                customer=None,
                duration=None,
                reason="looping",
                user_id="U0OWNER",
                now=running.clock.now(),
            )
        )
        answers = [http.get("/v1/agents/lead-router/gate") for _ in range(3 * PER_SECOND)]
    assert {(a.status_code, a.json()["allowed"], a.json()["reason"]) for a in answers} == {(200, False, "paused")}
    refused(versions(running.url))


@pytest.mark.both_shared
def test_an_agents_own_limit_overrides_the_default_and_off_lifts_it(running: Running) -> None:
    assert [ask(running.url, "billing-bot").status_code for _ in range(BILLING_PER_MINUTE)] == [201, 201]
    retry_after, message = refused(ask(running.url, "billing-bot"))
    assert "its limit (agents.billing-bot.limits.approvals_per_minute: 2)" in message and retry_after == "60"
    assert {versions(running.url, "billing-bot").status_code for _ in range(4 * PER_SECOND)} == {200}


def test_a_healthy_redis_counts_in_one_round_trip_and_sql_is_not_touched(running: Running, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    before = redis.info("commandstats")
    for _ in range(PER_SECOND + 2):
        versions(running.url)
    after = redis.info("commandstats")
    redis.close()

    def calls(stats: dict[str, Any]) -> dict[str, int]:
        return {name: value["calls"] for name, value in stats.items()}

    grew = {name: n - calls(before).get(name, 0) for name, n in calls(after).items()}
    assert grew["cmdstat_evalsha"] == PER_SECOND + 2, "one script call per request"
    # Inside the script: one GET per request, one INCR per request let through (a refused one is not counted).
    assert (grew["cmdstat_get"], grew["cmdstat_incr"]) == (PER_SECOND + 2, PER_SECOND)
    assert rate_rows(running.services.db) == []


@contextmanager
def replicas(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[tuple[Running, Running]]:
    """Two servers on one database and one Redis, as two replicas are."""
    with ExitStack() as stack:
        a, b = (stack.enter_context(contextmanager(serve)(settings, clock, slack)) for _ in range(2))
        yield a, b


def concurrently(a: Running, b: Running, count: int) -> list[int]:
    """`count` requests at once, half to each replica; their statuses."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda i: versions((a, b)[i % 2].url).status_code, range(count)))


def test_two_replicas_sharing_redis_count_together_exactly(
    settings: Settings, clock: ManualClock, slack: FakeSlack
) -> None:
    with replicas(settings, clock, slack) as (a, b):
        for second in range(3):
            clock.set(T0 + timedelta(seconds=second))
            statuses = concurrently(a, b, 24)
            assert (statuses.count(200), statuses.count(429)) == (PER_SECOND, 24 - PER_SECOND)


def test_without_redis_replicas_count_together_exactly_in_sql(
    settings: Settings, clock: ManualClock, slack: FakeSlack, database_url: str
) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    down = settings.model_copy(
        update={"redis_url": unreachable, "database_url": database_url, "handrail_scheduler": False}
    )
    with replicas(down, clock, slack) as (a, b):
        for second in range(2):
            clock.set(T0 + timedelta(seconds=second))
            statuses = concurrently(a, b, 24)
            assert (statuses.count(200), statuses.count(429)) == (PER_SECOND, 24 - PER_SECOND)
            assert "retry in 1s" in refused(versions(b.url))[1]
        start = int((T0 + timedelta(seconds=1)).timestamp())
        assert rate_rows(a.services.db) == [("lead-router:requests_per_second", start, PER_SECOND)], (
            "older windows pruned"
        )


def test_with_neither_redis_nor_sql_requests_pass_uncounted(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail open: a rate limit protects capacity, and the request meets the same outage anyway."""
    db = Database(f"postgresql+psycopg://handrail@127.0.0.1:{free_port()}/none")
    limiter = RateLimiter(
        config=parse_config(limited_config()),
        clock=clock,
        rates=RedisRateCounter(nowhere()),
        lane=Lane(db, CapacityLimiter(8)),
    )

    async def flood() -> None:
        for _ in range(3 * PER_SECOND):
            await limiter.check("lead-router", approval=True)
        await limiter.counter.redis.aclose()

    asyncio.run(flood())
    db.dispose()
    said = [record.getMessage() for record in caplog.records if record.name == "bot.limits"]
    assert [line.split(" (")[0] for line in said] == [
        "rate limits: Redis cannot count",
        "rate limits: neither Redis nor SQL can count",
    ], "each outage is logged once, not once per request"


def nowhere() -> AsyncRedis:
    return AsyncRedis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there


def test_the_limiter_counts_exactly_in_sql_under_concurrency(db: Database, clock: ManualClock) -> None:
    limiter = RateLimiter(
        config=parse_config(limited_config()),
        clock=clock,
        rates=RedisRateCounter(nowhere()),
        lane=Lane(db, CapacityLimiter(8)),
    )

    async def attempt() -> bool:
        try:
            await limiter.check("lead-router", approval=True)
        except RateLimited:
            return False
        return True

    async def flood() -> list[bool]:
        passed = await asyncio.gather(*(attempt() for _ in range(20)))
        await limiter.counter.redis.aclose()
        return passed

    assert sum(asyncio.run(flood())) == PER_MINUTE
    counts = {key: count for key, _, count in rate_rows(db)}
    assert counts == {"lead-router:approvals_per_minute": PER_MINUTE, "lead-router:requests_per_second": PER_MINUTE}


@pytest.fixture
def frozen_redis() -> Iterator[str]:
    """A redis-server of this test's own, stopped with SIGSTOP: connections open, nothing answers
    (as when the network drops without closing them)."""
    url, stop = start_redis()
    with Redis.from_url(url) as redis:
        pid = int(redis.info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    yield url
    os.kill(pid, signal.SIGCONT)
    stop()


def test_while_redis_hangs_one_request_at_a_time_waits_for_it(
    db: Database, clock: ManualClock, frozen_redis: str
) -> None:
    """The others count in SQL meanwhile, exactly; Redis is tried again after a second (of a
    monotonic clock the test moves)."""
    seconds = [0.0]
    redis = AsyncRedis.from_url(frozen_redis, socket_timeout=0.2, socket_connect_timeout=0.2)
    config = parse_config(limited_config())
    limiter = RateLimiter(
        config=config,
        clock=clock,
        rates=RedisRateCounter(redis),
        lane=Lane(db, CapacityLimiter(8)),
        monotonic=lambda: seconds[0],
    )
    tried = []
    take = limiter.counter.take

    async def counted_take(slots: Any) -> int | None:
        tried.append(len(slots))
        return await take(slots)

    limiter.counter.take = counted_take  # type: ignore[method-assign]

    async def attempt() -> bool:
        try:
            await limiter.check("lead-router")
        except RateLimited:
            return False
        return True

    async def outage() -> list[bool]:
        passed = [await attempt()]  # waits for Redis's timeout, then counts in SQL
        passed += [await attempt() for _ in range(2)]
        assert len(tried) == 1, "within a second of the failure, Redis is not tried"
        seconds[0] += 1.5
        passed += await asyncio.gather(*(attempt() for _ in range(5)))
        assert len(tried) == 2, "one request tries Redis again; the others do not wait for it"
        await redis.aclose()
        return passed

    assert sum(asyncio.run(outage())) == PER_SECOND
    assert [count for _, _, count in rate_rows(db)] == [PER_SECOND]


def limiter_on(redis: AsyncRedis, db: Database, clock: ManualClock, **extra: Any) -> RateLimiter:
    return RateLimiter(
        config=parse_config(limited_config()),
        clock=clock,
        rates=RedisRateCounter(redis),
        lane=Lane(db, CapacityLimiter(8)),
        **extra,
    )


async def refusal_of(limiter: RateLimiter, *, approval: bool = False) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await limiter.check("lead-router", approval=approval)
    return caught.value


def test_a_request_past_both_limits_is_told_the_longer_wait(db: Database, clock: ManualClock, redis_url: str) -> None:
    clock.set(T0 + timedelta(seconds=15.5))
    limiter = limiter_on(AsyncRedis.from_url(redis_url), db, clock)

    async def both_full() -> tuple[RateLimited, RateLimited]:
        for _ in range(PER_MINUTE):
            await limiter.check("lead-router", approval=True)
        for _ in range(PER_SECOND - PER_MINUTE):
            await limiter.check("lead-router")
        refusals = await refusal_of(limiter, approval=True), await refusal_of(limiter)
        await limiter.counter.redis.aclose()
        return refusals

    approval, request = asyncio.run(both_full())
    assert (approval.retry_after, str(approval)) == (
        45,
        "lead-router has asked for 3 approvals this minute, its limit (limits.approvals_per_minute: 3); "
        "retry in 45s, at 2026-11-02T10:01:00+00:00",
    )
    assert (request.retry_after, str(request)) == (
        1,
        "lead-router has sent 5 requests this second, its limit (limits.requests_per_second: 5); "
        "retry in 1s, at 2026-11-02T10:00:16+00:00",
    )


def test_in_sql_a_new_window_prunes_only_its_own_limits_older_windows(db: Database, clock: ManualClock) -> None:
    """A second's first request deletes that limit's earlier seconds, and neither the minute's
    count of approvals (whose window started earlier) nor another agent's counts."""
    limiter = limiter_on(nowhere(), db, clock)

    async def flood() -> RateLimited:
        for _ in range(PER_MINUTE):
            await limiter.check("lead-router", approval=True)
        await limiter.check("billing-bot", approval=True)
        clock.set(T0 + timedelta(seconds=1))
        await limiter.check("lead-router")
        clock.set(T0 + timedelta(seconds=2))
        refused = await refusal_of(limiter, approval=True)
        await limiter.counter.redis.aclose()
        return refused

    assert asyncio.run(flood()).retry_after == 58
    start = int(T0.timestamp())
    assert rate_rows(db) == [
        ("billing-bot:approvals_per_minute", start, 1),
        ("lead-router:approvals_per_minute", start, PER_MINUTE),
        ("lead-router:requests_per_second", start + 1, 1),
    ]


@pytest.fixture
def own_redis() -> Iterator[tuple[str, int]]:
    """A redis-server of this test's own: (url, pid), to stop with SIGSTOP and go on with SIGCONT."""
    url, stop = start_redis()
    with Redis.from_url(url) as redis:
        pid = int(redis.info("server")["process_id"])
    yield url, pid
    os.kill(pid, signal.SIGCONT)
    stop()


def test_redis_failing_and_answering_again_is_logged_once_each_way_and_it_counts_again(
    db: Database, clock: ManualClock, own_redis: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    url, pid = own_redis
    seconds = [0.0]
    redis = AsyncRedis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
    limiter = limiter_on(redis, db, clock, monotonic=lambda: seconds[0])

    async def outage_and_back() -> None:
        await limiter.check("lead-router")
        os.kill(pid, signal.SIGSTOP)
        for _ in range(2):  # the first waits for Redis's timeout; the second counts in SQL at once
            await limiter.check("lead-router")
        os.kill(pid, signal.SIGCONT)  # Redis may still run the count that timed out: it is in this second
        seconds[0] += 1.5
        clock.set(T0 + timedelta(seconds=1))
        for _ in range(PER_SECOND):  # Redis counts again
            await limiter.check("lead-router")
        assert (await refusal_of(limiter)).retry_after == 1
        await redis.aclose()

    asyncio.run(outage_and_back())
    said = [record.getMessage() for record in caplog.records if record.name == "bot.limits"]
    assert len(said) == 2, said
    assert said[0].startswith("rate limits: Redis cannot count (Timeout reading from 127.0.0.1:")
    assert said[0].endswith("); counting in SQL until it can")
    assert said[1] == "rate limits: Redis counts again"
    assert [count for _, _, count in rate_rows(db)] == [2]


def test_sql_failing_and_answering_again_is_logged_once_each_way_and_it_counts_again(
    db: Database, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is down throughout; SQL fails while its table is missing, and requests pass uncounted."""
    limiter = limiter_on(nowhere(), db, clock, monotonic=lambda: 0.0)  # Redis is not tried again
    table = RateCount.__table__

    async def outage_and_back() -> RateLimited:
        await limiter.check("lead-router")
        table.drop(db.engine)  # type: ignore[attr-defined]
        for _ in range(PER_SECOND):
            await limiter.check("lead-router")
        table.create(db.engine)  # type: ignore[attr-defined]
        for _ in range(PER_SECOND):
            await limiter.check("lead-router")
        refused = await refusal_of(limiter)
        await limiter.counter.redis.aclose()
        return refused

    assert asyncio.run(outage_and_back()).retry_after == 1
    said = [record.getMessage() for record in caplog.records if record.name == "bot.limits"]
    assert [line.split(" (")[0] for line in said] == [
        "rate limits: Redis cannot count",
        "rate limits: neither Redis nor SQL can count",
        "rate limits: SQL counts again",
    ]
    assert "Error 111 connecting to 127.0.0.1:" in said[0] and said[0].endswith("); counting in SQL until it can")
    assert "rate_counts" in said[1] and said[1].endswith("); requests pass uncounted")
    assert said[2] == "rate limits: SQL counts again"


# --- the config -------------------------------------------------------------------------------


WRITE = "write a whole number, e.g. requests_per_second: 50, or off to lift the limit"
RANGE = "is out of range: write a whole number from 1 to 1000000, or off to lift the limit"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, f"0 {RANGE}"),
        (-5, f"-5 {RANGE}"),
        (10**9, f"1000000000 {RANGE}"),
        (2.5, f"2.5 is not a whole number: {WRITE}"),
        ("fast", f'"fast" is not a whole number: {WRITE}'),
        (True, f"true is not a whole number: {WRITE}"),
        (None, f"is empty: {WRITE}"),
    ],
)
@pytest.mark.parametrize("where", ["top level", "agent"])
def test_a_bad_rate_limit_is_named_with_what_to_write(where: str, value: object, expected: str) -> None:
    data = config_dict()
    if where == "top level":
        data["limits"] = {"requests_per_second": value}
        key = "limits.requests_per_second"
    else:
        data["agents"]["lead-router"]["limits"] = {"requests_per_second": value}
        key = "agents.lead-router.limits.requests_per_second"
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value) == f"config: {key}: {expected}"


def test_rate_limit_config_mistakes_are_listed_together() -> None:
    data = config_dict() | {"limits": {"actions_per_hour": 500, "approvals_per_minute": 0, "request_per_second": 5}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert sorted(caught.value.lines()) == [
        "config: limits.actions_per_hour: volume caps are set per agent: move it to "
        "agents.<id>.limits.actions_per_hour",
        "config: limits.approvals_per_minute: 0 is out of range: write a whole number from 1 to 1000000, or off to "
        "lift the limit",
        "config: limits.request_per_second: unknown key: did you mean requests_per_second?",
    ]


def test_limits_default_to_none_and_off_in_yaml_lifts_a_default(tmp_path: Path) -> None:
    plain = parse_config(config_dict())
    assert plain.rate_limit("lead-router", "requests_per_second") == (None, "limits.requests_per_second")
    data = config_dict() | {"limits": {"requests_per_second": 50}}
    data["agents"]["billing-bot"]["limits"] = {"requests_per_second": "BARE_OFF"}
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data).replace("BARE_OFF", "off"))  # YAML reads a bare off as false
    config = load_config(path)
    assert config.rate_limit("billing-bot", "requests_per_second") == (
        None,
        "agents.billing-bot.limits.requests_per_second",
    )
    assert config.rate_limit("lead-router", "requests_per_second") == (50, "limits.requests_per_second")


def test_the_example_config_sets_limits_for_every_agent() -> None:
    config = load_config(ROOT / "handrail.example.yml")
    assert config.rate_limit("lead-router", "requests_per_second") == (50, "limits.requests_per_second")
    assert config.rate_limit("lead-router", "approvals_per_minute") == (60, "limits.approvals_per_minute")
