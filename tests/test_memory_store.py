"""What one process without Redis keeps in memory (storage/memory_store.py) behaves as the Redis
counterparts do."""

from __future__ import annotations

import asyncio

from storage.counters import Slot
from storage.memory_store import ChangeFeed, MemoryFirstSeen, MemoryGroupCache, MemoryRateCounter


def test_the_group_cache_forgets_members_after_its_time_to_live() -> None:
    seconds = [100.0]
    cache = MemoryGroupCache(ttl_seconds=300, monotonic=lambda: seconds[0])

    async def scenario() -> list[frozenset[str] | None]:
        seen = [await cache.get("S1")]
        await cache.put("S1", frozenset({"U1", "U2"}))
        seconds[0] = 399.9
        seen.append(await cache.get("S1"))
        seconds[0] = 400.0
        seen.append(await cache.get("S1"))
        return seen

    assert asyncio.run(scenario()) == [None, frozenset({"U1", "U2"}), None]


def test_the_group_cache_keeps_members_five_minutes_by_default() -> None:
    seconds = [0.0]
    cache = MemoryGroupCache(monotonic=lambda: seconds[0])

    async def scenario() -> list[frozenset[str] | None]:
        await cache.put("S1", frozenset({"U1"}))
        seconds[0] = 299.9
        kept = await cache.get("S1")
        seconds[0] = 300.0
        return [kept, await cache.get("S1")]

    assert asyncio.run(scenario()) == [frozenset({"U1"}), None]


def test_the_rate_counter_counts_in_every_slot_or_in_none() -> None:
    counter = MemoryRateCounter()
    per_second = Slot("lead-router", "requests_per_second", 1000, 1, 2)
    per_minute = Slot("lead-router", "approvals_per_minute", 960, 60, 3)

    async def scenario() -> list[int | None]:
        answers = [await counter.take([per_minute, per_second]) for _ in range(3)]  # the third: 1 s full
        answers.append(await counter.take([per_minute]))  # the refused one took nothing from the minute
        answers.append(await counter.take([per_minute]))
        next_second = Slot("lead-router", "requests_per_second", 1001, 1, 2)
        answers += [await counter.take([next_second]) for _ in range(3)]  # a new window starts at zero
        other_agent = Slot("billing-bot", "requests_per_second", 1001, 1, 2)
        answers.append(await counter.take([other_agent]))
        return answers

    assert asyncio.run(scenario()) == [None, None, 1, None, 0, None, None, 0, None]


def test_a_long_poll_wakes_on_a_change_announced_in_the_process() -> None:
    feed = ChangeFeed()
    links: list[bool] = []
    feed.on_link = links.append

    async def scenario() -> bool:
        listening = asyncio.create_task(feed.listen())
        async with feed.watch("apr_1") as changed, feed.watch("apr_2") as unrelated:
            await feed.announce(["apr_1", "apr_nobody_waits_for"])
            woke = changed.is_set() and not unrelated.is_set()
        feed.stop()
        await asyncio.wait_for(listening, 1)
        return woke

    assert asyncio.run(scenario())
    assert links == [True], "the gate was not told that it hears every replica"


def test_first_seen_is_true_once_per_key_until_its_time_to_live_passes() -> None:
    seconds = [0.0]
    seen = MemoryFirstSeen(monotonic=lambda: seconds[0])

    async def scenario() -> list[bool]:
        answers = [await seen.first("Ev1", 3600), await seen.first("Ev1", 3600), await seen.first("Ev2", 3600)]
        seconds[0] = 3599.9
        answers.append(await seen.first("Ev1", 3600))
        seconds[0] = 3600.0
        answers += [await seen.first("Ev1", 3600), await seen.first("Ev1", 3600)]
        return answers

    assert asyncio.run(scenario()) == [True, False, True, False, True, False]
    assert list(seen._until) == ["Ev1"], "expired keys are dropped as new ones come"
