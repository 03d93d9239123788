"""Pacing of Slack calls (bot/pacing.py): a token bucket per channel for chat.postMessage and one
per workspace for chat.update, shared by the process's concurrent senders; a 429 pauses the bucket
for all of them. And the whole path: a burst of 200 requests across 4 channels reaches a fake
Slack that enforces Slack's limits, with no 429, in the least time those limits allow (within 10%).

The burst runs at 10 times Slack's rates (both the pacer's Settings and the fake's limits), so it
takes about 5 seconds instead of 50."""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.clock import ManualClock
from bot.config import Settings
from bot.pacing import POST, UPDATE, Pacer, Rate
from local.slack import FakeSlack, Limit
from tests.helpers import SIGNING_SECRET, T0, WEBHOOK_SECRET, Running, serve
from tests.samples import REQUEST


class FakeTime:
    """A monotonic clock that only moves when a waiter sleeps: pacing measured exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def test_a_channel_gets_its_burst_at_once_then_one_message_per_interval_and_channels_do_not_wait_on_each_other() -> (
    None
):
    time = FakeTime()
    pacer = Pacer(Rate(1.0, 3), Rate(50 / 60, 5), monotonic=time.monotonic, sleep=time.sleep)

    async def send(channel: str, count: int) -> list[float]:
        sent = []
        for _ in range(count):
            await pacer.turn(POST, channel)
            sent.append(time.now)
        return sent

    assert asyncio.run(send("C1", 6)) == pytest.approx([0, 0, 0, 1, 2, 3])
    time.now = 100.0  # C1 has been quiet: its burst is back, and C2 never waited for C1
    assert asyncio.run(send("C2", 4)) == pytest.approx([100, 100, 100, 101])
    assert asyncio.run(send("C1", 4)) == pytest.approx([101, 101, 101, 102])


def test_updates_share_one_workspace_bucket_at_tier_3() -> None:
    time = FakeTime()
    pacer = Pacer(Rate(1.0, 3), Rate(50 / 60, 5), monotonic=time.monotonic, sleep=time.sleep)

    async def updates() -> list[float]:
        sent = []
        for channel in ("C1", "C2", "C3", "C4", "C5", "C6", "C7"):
            await pacer.turn(UPDATE, channel)
            sent.append(time.now)
        return sent

    assert asyncio.run(updates()) == pytest.approx([0, 0, 0, 0, 0, 1.2, 2.4])


def test_a_429_pauses_the_channel_for_every_sender_of_the_process() -> None:
    time = FakeTime()
    pacer = Pacer(Rate(1.0, 3), Rate(1.0, 3), monotonic=time.monotonic, sleep=time.sleep)

    async def scenario() -> tuple[list[float], float]:
        await pacer.turn(POST, "C1")
        pacer.pause(POST, "C1", 30)  # Slack: Retry-After: 30
        sent: list[float] = []

        async def one() -> None:
            await pacer.turn(POST, "C1")
            sent.append(time.now)

        await asyncio.gather(one(), one(), one())
        await pacer.turn(POST, "C2")  # another channel is not paused
        return sent, time.now

    sent, _ = asyncio.run(scenario())
    assert sent == pytest.approx([30, 31, 32]), "one call when the pause ends, then the rate; never before"


# --- the burst, end to end -------------------------------------------------------------------------

SPEED = 10  # times Slack's rates, for the pacer and the enforcing fake alike
POST_RATE, POST_BURST = 1.0 * SPEED, 3
UPDATE_RATE, UPDATE_BURST = 50 / 60 * SPEED, 5
CHANNELS = ["C0PACE1", "C0PACE2", "C0PACE3", "C0PACE4"]
PER_CHANNEL = 50
TOKENS = {f"pace-{i}": f"tok-pace-{i}" for i in range(len(CHANNELS))}


@pytest.fixture
def enforcing_slack() -> Iterator[FakeSlack]:
    with FakeSlack(check_blocks=False) as fake:
        yield fake
    assert fake.violations == []


@pytest.fixture
def paced(tmp_path: Path, enforcing_slack: FakeSlack) -> Iterator[Running]:
    agents = {
        agent: {
            "name": agent,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "channel": channel,
            "owners": {"primary": "U0OWNER"},
            "approvers": ["U0REVIEWER"],
        }
        for (agent, token), channel in zip(TOKENS.items(), CHANNELS, strict=True)
    }
    config_file = tmp_path / "handrail.yml"
    config_file.write_text(yaml.safe_dump({"agents": agents}))
    settings = Settings(
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=enforcing_slack.base_url,
        database_url=f"sqlite:///{tmp_path / 'handrail.db'}",
        handrail_config=config_file,
        handrail_webhook_secret=WEBHOOK_SECRET,
        handrail_queue_limit=256,
        handrail_slack_post_rate=POST_RATE,
        handrail_slack_post_burst=POST_BURST,
        handrail_slack_update_rate=UPDATE_RATE,
        handrail_slack_update_burst=UPDATE_BURST,
        _env_file=None,  # type: ignore[call-arg]
    )
    yield from serve(settings, ManualClock(T0), enforcing_slack)


def ask_all(running: Running) -> list[str]:
    agents = list(TOKENS)

    def one(i: int) -> str:
        agent = agents[i % len(agents)]
        headers = {"Authorization": f"Bearer {TOKENS[agent]}"}
        body: dict[str, Any] = REQUEST | {"agent": agent, "run_id": f"run-{i}"}
        response = httpx.post(f"{running.url}/v1/approvals", json=body, headers=headers, timeout=60)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(PER_CHANNEL * len(CHANNELS))))


def test_a_burst_of_200_cards_across_4_channels_reaches_slack_without_a_429_in_the_least_time_its_limits_allow(
    paced: Running, enforcing_slack: FakeSlack
) -> None:
    fake, total = enforcing_slack, PER_CHANNEL * len(CHANNELS)
    # The requests are all taken before the burst starts: Slack fails every first post (an error
    # it answers, retried after 5 s of the test's clock), so that what is measured is the pacing,
    # not how fast the requests came in.
    fake.fail_next("chat.postMessage", "internal_error", total)
    ids = ask_all(paced)
    fake.wait_for(lambda calls: sum(c.method == "chat.postMessage" for c in calls) >= total, timeout=60)
    assert paced.deliver_due() == 0  # once the pass that sent the last of them has recorded its failure
    fake.reset()
    fake.enforce_limits(Limit(POST_RATE, POST_BURST), Limit(UPDATE_RATE, UPDATE_BURST))
    paced.clock.advance(timedelta(seconds=5))
    paced.services.deliverer.kick()
    fake.wait_for(lambda calls: sum(c.method == "chat.postMessage" for c in calls) >= total, timeout=60)

    posts = fake.calls_to("chat.postMessage")
    assert [c.status for c in posts if c.status != 200] == [], "the enforcing fake answered 429"
    cards = {c.params["metadata"]["event_payload"]["id"] for c in posts}
    assert len(posts) == total and cards == set(ids), "every card once"
    times: dict[str, list[float]] = defaultdict(list)
    for call in posts:
        times[call.params["channel"]].append(call.received_at)
    assert {channel: len(t) for channel, t in times.items()} == dict.fromkeys(CHANNELS, PER_CHANNEL)

    least = (PER_CHANNEL - POST_BURST) / POST_RATE  # the burst at once, then one per interval
    took = max(c.received_at for c in posts) - min(c.received_at for c in posts)
    print(f"\n{total} cards in {took:.3f}s; the limits allow {least:.3f}s at least ({took / least - 1:+.1%})")
    assert took >= least
    assert took <= least * 1.10
