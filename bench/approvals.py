"""Benchmark of the approval loop: starts the real server (`handrail web`) against the fake Slack Web
API and a local redis-server, drives it at a fixed rate, and prints figures as JSON, then a summary:

- request -> card: from sending POST /v1/approvals to the card's chat.postMessage reaching Slack
- click -> ack: round trip of a signed Approve click to /slack/events
- approvals accepted per second: POST /v1/approvals with 32 requests in flight (the API alone)
- the highest offered rate at which request -> card p99 stays under 100 ms: rates stepped up by half
  until one misses, then bisected, a few seconds each, offered in an open loop from a process of
  its own; a rate passes when p99 is under 100 ms and at least 99% of its requests were accepted
- the server process's peak memory (VmHWM)

Answers of 503 or 429 (a server shedding load) are counted as shed, not as failures.

Usage: python bench/approvals.py [--rate 50] [--count 500] [--step-seconds 5] [--before PATH] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import SHED, Child, open_loop  # noqa: E402
from bench.servers import card_posts, code_location, percentiles, server_env, start_server, wait_ready  # noqa: E402
from local.slack import FakeSlack  # noqa: E402
from tests import slackreq  # noqa: E402
from tests.samples import REQUEST  # noqa: E402
from tests.servers import free_port, peak_memory_mb, start_redis  # noqa: E402

TOKEN = "bench-token"
SECRET = "bench-signing-secret"
CARD_P99_TARGET_MS = 100.0
ACCEPTED_SHARE = 0.99  # a rate passes only when at least this share of its requests is accepted
FIRST_RATE, STEP, MIN_RATE, MAX_RATE, BISECTIONS = 25.0, 1.5, 3.0, 2000.0, 3


async def at_rate(rate: float, count: int, send) -> list:  # type: ignore[no-untyped-def]
    """Open loop: start one call every 1/rate seconds, whatever the earlier ones are doing."""
    start = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    return await asyncio.gather(*tasks)


async def bench(url: str, fake: FakeSlack, rate: float, count: int) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as client:
        # Warm up (first requests open database and Redis connections).
        for _ in range(20):
            (await client.post("/v1/approvals", json=REQUEST)).raise_for_status()
        fake.wait_for(lambda calls: len(card_posts(fake)) >= 20, timeout=30)

        sent: dict[str, float] = {}
        shed = 0

        async def ask(i: int) -> None:
            nonlocal shed
            began = time.perf_counter()
            response = await client.post("/v1/approvals", json=REQUEST | {"summary": f"request {i}"})
            if response.status_code in SHED:
                shed += 1
                return
            response.raise_for_status()
            sent[response.json()["id"]] = began

        await at_rate(rate, count, ask)
        fake.wait_for(lambda calls: set(sent) <= set(card_posts(fake)), timeout=60)
        posted = card_posts(fake)
        to_card = [(posted[i] - began) * 1000 for i, began in sent.items()]

        messages = {  # the Approve button's value is "apr_…:<params>"
            block["elements"][0]["value"].split(":", 1)[0]: (
                block["elements"][0]["value"],
                call.response["channel"],
                call.response["ts"],
            )
            for call in fake.calls_to("chat.postMessage")
            if call.status == 200
            for block in call.params.get("blocks", [])
            if block["type"] == "actions"
        }
        ids = list(sent)

        async def approve(i: int) -> float:
            value, channel, ts = messages[ids[i]]
            body = slackreq.block_action(
                user_id="U0REVIEWER", action_id="approval.approve", value=value, channel_id=channel, message_ts=ts
            )
            began = time.perf_counter()
            response = await client.post(
                "/slack/events", content=body, headers=slackreq.sign(body, SECRET, int(time.time()))
            )
            assert response.status_code == 200, response.text
            return (time.perf_counter() - began) * 1000

        acks = await at_rate(rate, len(ids), approve)
        fake.wait_for(lambda calls: len([c for c in calls if c.method == "chat.update"]) >= len(ids), timeout=60)

        done = refused = 0

        async def worker(deadline: float) -> None:
            nonlocal done, refused
            while time.perf_counter() < deadline:
                response = await client.post("/v1/approvals", json=REQUEST)
                if response.status_code in SHED:
                    refused += 1
                    continue
                response.raise_for_status()
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(began + 5) for _ in range(32)))
        elapsed = time.perf_counter() - began

    return {
        "request_to_card_ms": percentiles(to_card),
        "click_to_ack_ms": percentiles(acks),
        "offered_rate_per_s": rate,
        "shed_at_offered_rate": shed,
        "approvals_accepted_per_s": round(done / elapsed, 1),
        "shed_per_s_with_32_in_flight": round(refused / elapsed, 1),
    }


def settle(fake: FakeSlack, quiet_s: float = 0.5, most_s: float = 30) -> None:
    """Wait until the server has posted nothing to Slack for `quiet_s` (cards of earlier requests
    still on their way would be timed with the next rate's), then forget the calls."""
    deadline = time.perf_counter() + most_s
    seen = -1
    while len(fake.calls) != seen and time.perf_counter() < deadline:
        seen = len(fake.calls)
        time.sleep(quiet_s)
    fake.reset()


def step(url: str, fake: FakeSlack, generator: Child, rate: float, seconds: float) -> dict[str, Any]:
    """One rate of the search: offered for `seconds`, then the cards of accepted requests waited for."""
    settle(fake)
    generator.submit(
        open_loop,
        {
            "ports": [int(url.rsplit(":", 1)[1])],
            "path": "/v1/approvals",
            "token": TOKEN,
            "body": REQUEST | {"summary": "step"},
            "rate": rate,
            "count": max(1, round(rate * seconds)),
            "timeout_s": 30.0,
            "max_in_flight": 2000,
            "start_at": time.perf_counter() + 0.2,
        },
    )
    load = generator.result()
    accepted = {r[4]: r[0] for r in load["records"] if r[4]}
    deadline = time.perf_counter() + 20
    while not set(accepted) <= set(posted := card_posts(fake)) and time.perf_counter() < deadline:
        time.sleep(0.1)
    to_card = [(posted[i] - began) * 1000 for i, began in accepted.items() if i in posted]
    card = percentiles(to_card)
    codes = [r[2] for r in load["records"]]
    passed = len(to_card) == len(accepted) >= ACCEPTED_SHARE * len(codes) and card.get("p99", 0) < CARD_P99_TARGET_MS
    return {
        "offered_per_s": round(rate, 1),
        "achieved_per_s": round(load["started"] / load["sending_s"], 1),
        "accepted": len(accepted),
        "shed": sum(1 for c in codes if c in SHED),
        "failed": sum(1 for c in codes if c not in (200, 201, *SHED)),
        "request_to_card_ms": {k: card[k] for k in ("p50", "p99") if k in card},
        "accepted_without_card": len(accepted) - len(to_card),
        "passed": passed,
    }


def search(url: str, fake: FakeSlack, seconds: float) -> dict[str, Any]:
    """The highest offered rate whose request -> card p99 stays under the target: from FIRST_RATE,
    up by half (or down by half) a step at a time until a rate misses (or passes), then bisected
    between the highest that passed and the lowest that missed."""
    steps: list[dict[str, Any]] = []
    best, missed = 0.0, None
    with ExitStack() as stack:
        generator = Child(stack)

        def passes(rate: float) -> bool:
            steps.append(step(url, fake, generator, rate, seconds))
            return bool(steps[-1]["passed"])

        rate = FIRST_RATE
        if passes(rate):
            best = rate
            while (rate := rate * STEP) <= MAX_RATE and passes(rate):
                best = rate
            missed = rate if rate <= MAX_RATE else None
        else:
            missed = rate
            while (rate := rate / 2) >= MIN_RATE and not passes(rate):
                missed = rate
            best = rate if rate >= MIN_RATE else 0.0
        for _ in range(BISECTIONS if missed and best else 0):
            rate = (best + missed) / 2
            best, missed = (rate, missed) if passes(rate) else (best, rate)
    return {
        "max_rate_per_s": round(best, 1),
        "lowest_missed_per_s": None if missed is None else round(missed, 1),
        "target": f"request -> card p99 < {CARD_P99_TARGET_MS:.0f} ms, >= {ACCEPTED_SHARE:.0%} accepted",
        "step_seconds": seconds,
        "steps": steps,
    }


def measure(checkout: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, from a server started in `checkout` with a database of its own."""
    work = Path(tempfile.mkdtemp(prefix="handrail-bench-"))
    config = {
        "agents": {
            "lead-router": {
                "name": "Lead router",
                "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                "channel": "C0APPROVALS",
                "owners": {"primary": "U0OWNER"},
                "approvers": ["U0REVIEWER"],
            }
        }
    }
    (work / "handrail.yml").write_text(yaml.safe_dump(config))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        redis_url, stop_redis = start_redis()
        stack.callback(stop_redis)
        fake = FakeSlack(check_blocks=False)  # the tests validate every card; here we time the bot
        fake.start()
        stack.callback(fake.stop)
        env = server_env(
            work / "handrail.yml",
            database_url=f"sqlite:///{work / 'handrail.db'}",
            redis_url=redis_url,
            fake=fake,
            port=free_port(),
            signing_secret=SECRET,
        )
        server, url = start_server(stack, env, work / "server.log", checkout)
        wait_ready(url, server, work / "server.log")
        figures = asyncio.run(bench(url, fake, args.rate, args.count))
        figures["max_rate_card_p99"] = search(url, fake, args.step_seconds)
        figures["server_peak_rss_mb"] = peak_memory_mb(server.pid)
        figures["slack_violations"] = len(fake.violations)
        figures["code"] = code_location(checkout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50, help="requests and clicks per second")
    parser.add_argument("--count", type=int, default=500, help="requests (and clicks) to send")
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=5,
        help="how long each rate of the search is offered (a sweep falls in each)",
    )
    parser.add_argument("--before", type=Path, help="a checkout of another commit, measured first in the same run")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args()

    runs = {"before": args.before, "current": ROOT} if args.before else {"current": ROOT}
    figures = {label: measure(checkout, args) for label, checkout in runs.items()}
    print(json.dumps(figures if args.before else figures["current"], indent=2))
    if args.json:
        return
    for label, found in figures.items():
        search_found = found["max_rate_card_p99"]
        print(
            f"\n{label}: highest offered rate with request -> card p99 < {CARD_P99_TARGET_MS:.0f} ms: "
            f"{search_found['max_rate_per_s']:g}/s (lowest missed: {search_found['lowest_missed_per_s']}/s); "
            f"API alone, 32 in flight: {found['approvals_accepted_per_s']:g} accepted/s"
        )


if __name__ == "__main__":
    main()
