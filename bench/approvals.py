"""Benchmark of the approval loop: starts the real server (`handrail web`) against the fake Slack Web
API and a local redis-server, drives it at a fixed rate, and prints figures as JSON:

- request -> card: from sending POST /v1/approvals to the card's chat.postMessage reaching Slack
- click -> ack: round trip of a signed Approve click to /slack/events
- approvals accepted per second: POST /v1/approvals with 32 requests in flight
- the server process's peak memory (VmHWM)

Usage: python bench/approvals.py [--rate 50] [--count 500]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import slackreq  # noqa: E402
from tests.fakeslack import FakeSlack  # noqa: E402
from tests.samples import REQUEST  # noqa: E402
from tests.servers import free_port, peak_memory_mb  # noqa: E402

TOKEN = "bench-token"
SECRET = "bench-signing-secret"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": round(cuts[49], 2), "p99": round(cuts[98], 2), "max": round(ordered[-1], 2), "n": len(ordered)}


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


def card_posts(fake: FakeSlack) -> dict[str, float]:
    """approval id -> when its card reached Slack."""
    posted = {}
    for call in fake.calls_to("chat.postMessage"):
        if "thread_ts" in call.params or call.status != 200:
            continue
        for block in call.params.get("blocks", []):
            if block["type"] == "actions":
                posted[block["elements"][0]["value"]] = call.received_at
    return posted


async def bench(url: str, fake: FakeSlack, rate: float, count: int) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as client:
        # Warm up (first requests open database and Redis connections).
        for _ in range(20):
            (await client.post("/v1/approvals", json=REQUEST)).raise_for_status()
        fake.wait_for(lambda calls: len(card_posts(fake)) >= 20, timeout=30)

        sent: dict[str, float] = {}

        async def ask(i: int) -> None:
            began = time.perf_counter()
            response = await client.post("/v1/approvals", json=REQUEST | {"summary": f"request {i}"})
            response.raise_for_status()
            sent[response.json()["id"]] = began

        await at_rate(rate, count, ask)
        fake.wait_for(lambda calls: set(sent) <= set(card_posts(fake)), timeout=60)
        posted = card_posts(fake)
        to_card = [(posted[i] - began) * 1000 for i, began in sent.items()]

        messages = {
            block["elements"][0]["value"]: (call.response["channel"], call.response["ts"])
            for call in fake.calls_to("chat.postMessage")
            if call.status == 200
            for block in call.params.get("blocks", [])
            if block["type"] == "actions"
        }
        ids = list(sent)

        async def approve(i: int) -> float:
            channel, ts = messages[ids[i]]
            body = slackreq.block_action(
                user_id="U0REVIEWER", action_id="approval.approve", value=ids[i], channel_id=channel, message_ts=ts
            )
            began = time.perf_counter()
            response = await client.post(
                "/slack/events", content=body, headers=slackreq.sign(body, SECRET, int(time.time()))
            )
            assert response.status_code == 200, response.text
            return (time.perf_counter() - began) * 1000

        acks = await at_rate(rate, count, approve)
        fake.wait_for(lambda calls: len([c for c in calls if c.method == "chat.update"]) >= count, timeout=60)

        done = 0

        async def worker(deadline: float) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                (await client.post("/v1/approvals", json=REQUEST)).raise_for_status()
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(began + 5) for _ in range(32)))
        throughput = done / (time.perf_counter() - began)

    return {
        "request_to_card_ms": percentiles(to_card),
        "click_to_ack_ms": percentiles(acks),
        "offered_rate_per_s": rate,
        "approvals_accepted_per_s": round(throughput, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50, help="requests and clicks per second")
    parser.add_argument("--count", type=int, default=500, help="requests (and clicks) to send")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="handrail-bench-"))
    redis_port, web_port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], stdout=subprocess.DEVNULL
    )
    fake = FakeSlack(check_blocks=False)  # the tests validate every card; here we time the bot
    fake.start()
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
    env = os.environ | {
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake.base_url,
        "DATABASE_URL": f"sqlite:///{work / 'handrail.db'}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "HANDRAIL_CONFIG": str(work / "handrail.yml"),
        "PORT": str(web_port),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "web"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{web_port}"
    try:
        for _ in range(300):  # wait up to 30 s for the server to come up
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the server did not become ready")
        figures = asyncio.run(bench(url, fake, args.rate, args.count))
        figures["server_peak_rss_mb"] = peak_memory_mb(server.pid)
        figures["slack_violations"] = len(fake.violations)
        print(json.dumps(figures, indent=2))
    finally:
        server.terminate()
        server.wait(10)
        redis.terminate()
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
