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
from bot.pacing import POST, UPDATE, Busy, Pacer, Rate
from local.slack import FakeSlack, Limit
from tests.helpers import SIGNING_SECRET, T0, WEBHOOK_SECRET, Running, serve
from tests.samples import REQUEST


class FakeTime:
    """A monotonic clock that only moves when a waiter sleeps: pacing measured exactly. `woke`:
    when each sleeper wakes, in the order they went to sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.woke: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.woke.append(self.now + seconds)
        self.now = max(self.now, self.now + seconds)
        await asyncio.sleep(0)


def pacer(time: FakeTime, post: Rate = Rate(1.0, 3), update: Rate = Rate(50 / 60, 5)) -> Pacer:
    return Pacer(post, update, monotonic=time.monotonic, sleep=time.sleep)


async def sent_at(time: FakeTime, pacer: Pacer, method: str, channels: list[str]) -> list[float]:
    sent = []
    for channel in channels:
        await pacer.turn(method, channel)
        sent.append(time.now)
    return sent


def test_a_channel_gets_its_burst_at_once_then_one_message_per_interval_and_channels_do_not_wait_on_each_other() -> (
    None
):
    time = FakeTime()
    paced = pacer(time)
    assert asyncio.run(sent_at(time, paced, POST, ["C1"] * 6)) == pytest.approx([0, 0, 0, 1, 2, 3])
    time.now = 100.0  # C1 has been quiet: its burst is back, and C2 never waited for C1
    assert asyncio.run(sent_at(time, paced, POST, ["C2"] * 4)) == pytest.approx([100, 100, 100, 101])
    assert asyncio.run(sent_at(time, paced, POST, ["C1"] * 4)) == pytest.approx([101, 101, 101, 102])


def test_updates_share_one_workspace_bucket_at_tier_3() -> None:
    time = FakeTime()
    channels = ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    assert asyncio.run(sent_at(time, pacer(time), UPDATE, channels)) == pytest.approx([0, 0, 0, 0, 0, 1.2, 2.4])


def test_concurrent_senders_queue_in_turn_and_a_429_pauses_the_channel_for_all_of_them() -> None:
    time = FakeTime()
    paced = Pacer(Rate(1.0, 3), Rate(1.0, 3), max_wait=60, monotonic=time.monotonic, sleep=time.sleep)

    async def scenario() -> None:
        await paced.turn(POST, "C1")
        paced.pause(POST, "C1", 30)  # Slack: Retry-After: 30
        await asyncio.gather(*(paced.turn(POST, "C1") for _ in range(3)))

    asyncio.run(scenario())
    assert time.woke == pytest.approx([30, 31, 32]), "one call when the pause ends, then the rate; never before"
    assert asyncio.run(sent_at(time, paced, POST, ["C2"])) == [time.now], "another channel is not paused"


def test_a_turn_further_than_max_wait_is_refused_without_booking_it() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # time stands still: every turn is asked at 0
        waits.append(seconds)

    paced = Pacer(Rate(1.0, 1), Rate(1.0, 1), max_wait=2, monotonic=lambda: 0.0, sleep=sleep)

    async def scenario() -> list[float]:
        for _ in range(3):
            await paced.turn(POST, "C1")  # at 0, then booked for 1 and 2
        refused = []
        for _ in range(2):
            with pytest.raises(Busy) as busy:
                await paced.turn(POST, "C1")
            refused.append(busy.value.wait)
        return refused

    assert asyncio.run(scenario()) == pytest.approx([3, 3]), "a refused turn books nothing"
    assert waits == pytest.approx([1, 2])


# --- the burst, end to end -------------------------------------------------------------------------

SPEED = 5  # times Slack's rates, for the pacer and the enforcing fake alike
POST_RATE, POST_BURST = 1.0 * SPEED, 3
UPDATE_RATE, UPDATE_BURST = 50 / 60 * SPEED, 5
CHANNELS = ["C0PACE1", "C0PACE2", "C0PACE3", "C0PACE4"]
PER_CHANNEL = 50
# Receipt times carry the loopback's jitter: a call booked on time may arrive a little after the one
# booked next. The enforcing fake lets a call pass up to this early, as Slack's own limits would.
GRACE = 0.1  # half an interval at these rates
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
    fake.enforce_limits(Limit(POST_RATE, POST_BURST), Limit(UPDATE_RATE, UPDATE_BURST), grace=GRACE)
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
    first = min(c.received_at for c in posts)
    spans = {ch: (min(t) - first, max(t) - first) for ch, t in sorted(times.items())}
    shown = ", ".join(f"{ch} {a:.3f}..{b:.3f}" for ch, (a, b) in spans.items())
    print(f"\n{total} cards in {took:.3f}s; the limits allow {least:.3f}s at least ({took / least - 1:+.1%}); {shown}")
    # Never faster than the limits allow (the fake would have answered 429 otherwise; it lets a
    # call pass GRACE early), and within 10% of it.
    assert all(last - start >= least - GRACE for start, last in spans.values()), spans
    assert took >= least - GRACE
    assert took <= least * 1.10


def test_the_enforcing_fake_answers_429_with_retry_after_past_a_channels_burst_as_slack_does(
    enforcing_slack: FakeSlack,
) -> None:
    fake = enforcing_slack
    fake.enforce_limits(Limit(0.001, 3), Limit(0.001, 1))  # one more every 1000 s: nothing refills here
    with httpx.Client(base_url=fake.base_url, headers={"Authorization": "Bearer xoxb-test"}) as client:
        answers = [client.post("chat.postMessage", json={"channel": "C1", "text": "hi"}) for _ in range(4)]
        other = client.post("chat.postMessage", json={"channel": "C2", "text": "hi"})
        ts = answers[0].json()["ts"]
        updates = [client.post("chat.update", json={"channel": "C1", "ts": ts, "text": "edited"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].headers["Retry-After"] == "1" and answers[3].json() == {"ok": False, "error": "ratelimited"}
    assert other.status_code == 200, "each channel has its own limit"
    assert [u.status_code for u in updates] == [200, 429], "chat.update: one limit for the workspace"
    assert len(fake.history("C1")) == 3, "a refused call changes nothing"
