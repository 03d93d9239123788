"""What the benchmarks share: `handrail web` started as production starts it, from this checkout or
another one (an older commit, to measure before and after in one run); its readiness; what its log
says; when the fake Slack received each approval's card; percentiles."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local.slack import FakeSlack  # noqa: E402

# Not problems of the run: the start's config warnings (the bench configs use the example's Slack
# ids; `-m bot.cli` logs as __main__) and Bolt's note that the app gives it its client.
TICK = os.sysconf("SC_CLK_TCK")
_NOT_PROBLEMS = ("WARNING bot.cli:", "WARNING __main__:", "WARNING slack_bolt.AsyncApp: As you gave `client`")


def percentiles(samples: list[float], digits: int = 2) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {
        "min": round(ordered[0], digits),
        "p50": round(cuts[49], digits),
        "p90": round(cuts[89], digits),
        "p99": round(cuts[98], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# --- servers --------------------------------------------------------------------------------


def server_env(
    config: Path, *, database_url: str, redis_url: str, fake: FakeSlack, port: int, signing_secret: str
) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "HANDRAIL_SCHEDULER"} | {
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": fake.base_url,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HANDRAIL_CONFIG": str(config),
        "PORT": str(port),
        "HANDRAIL_LOG_FORMAT": "text",  # the log is a file; its problems are counted by their LEVEL prefix
        # The fake Slack has no rate limits, and the benches measure the server: pacing is set far
        # above Slack's limits (1 post a second per channel, about 50 updates a minute), which would
        # otherwise be what every bench measures.
        "HANDRAIL_SLACK_POST_RATE": "1000",
        "HANDRAIL_SLACK_POST_BURST": "100",
        "HANDRAIL_SLACK_UPDATE_RATE": "1000",
        "HANDRAIL_SLACK_UPDATE_BURST": "100",
    }


def _in_checkout(env: dict[str, str], checkout: Path) -> dict[str, str]:
    """The checkout's packages first: the venv holds this project installed in editable mode from
    another directory, whose finder comes after sys.path."""
    return env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), env.get("PYTHONPATH")]))}


def code_location(checkout: Path) -> str:
    """Where `bot` is imported from when a server starts in `checkout`; stops the run when that
    is not the checkout's own code."""
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import bot, handlers, storage; print(bot.__file__, handlers.__file__, storage.__file__)",
        ],
        env=_in_checkout(dict(os.environ), checkout),
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not all(Path(path).resolve().is_relative_to(checkout.resolve()) for path in found):
        raise SystemExit(f"a server started in {checkout} would not run its code: it imports {found}")
    return found[0]


def start_server(
    stack: ExitStack, env: dict[str, str], log_path: Path, checkout: Path = ROOT
) -> tuple[subprocess.Popen[bytes], str]:
    """`handrail web` (the real clock) run from `checkout`, stopped when `stack` closes."""
    log = stack.enter_context(log_path.open("w"))
    server = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "web"],
        env=_in_checkout(env, checkout),
        cwd=checkout,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )

    def stop() -> None:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)

    stack.callback(stop)
    return server, f"http://127.0.0.1:{env['PORT']}"


def wait_ready(url: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    for _ in range(300):  # up to 30 s
        if server.poll() is not None:
            raise SystemExit(f"the server on {url} exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server on {url} did not become ready")


def server_errors(log_path: Path) -> int:
    return sum(1 for line in log_path.read_text().splitlines() if line.startswith(("ERROR", "Traceback")))


def server_warnings(log_path: Path) -> int:
    """Warnings such as "gate: lost Redis pub/sub" (the gate then reads SQL on every check)."""
    return sum(
        1
        for line in log_path.read_text().splitlines()
        if line.startswith("WARNING") and not line.startswith(_NOT_PROBLEMS)
    )


def log_problems(log_path: Path, most: int = 6) -> dict[str, Any]:
    """The distinct ERROR and WARNING lines of a server's log, each with how often it came, and the
    last line of each traceback (what was raised)."""
    seen: dict[str, int] = {}
    lines = log_path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines):
        if line.startswith(("ERROR", "WARNING")) and not line.startswith(_NOT_PROBLEMS):
            key = line[:240]
        elif line.startswith("Traceback"):
            end = next((i for i in range(number + 1, len(lines)) if not lines[i].startswith((" ", "\t"))), None)
            while end is not None and end + 1 < len(lines) and lines[end].startswith(("The above", "During")):
                end = next((i for i in range(end + 2, len(lines)) if not lines[i].startswith((" ", "\t"))), None)
            key = "raised: " + (lines[end][:220] if end is not None else "?")
        else:
            continue
        seen[key] = seen.get(key, 0) + 1
    ordered = sorted(seen.items(), key=lambda item: -item[1])
    return {"errors": server_errors(log_path), "warnings": server_warnings(log_path), "lines": dict(ordered[:most])}


def card_posts(fake: FakeSlack) -> dict[str, float]:
    """approval id -> when its card reached Slack (time.perf_counter(), which on Linux is the
    machine's monotonic clock, the same in every process)."""
    posted = {}
    for call in fake.calls_to("chat.postMessage"):
        if "thread_ts" in call.params or call.status != 200:
            continue
        for block in call.params.get("blocks", []):
            if block["type"] == "actions":
                posted[block["elements"][0]["value"].split(":", 1)[0]] = call.received_at  # "apr_…:params"
    return posted
