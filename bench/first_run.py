"""From a clean clone to the local page: how long `make run` takes on a machine without redis-server,
as a newcomer runs it. Prints JSON and a line per run.

Each run clones this checkout's HEAD into a new temporary directory (without ../shared, as a clone
elsewhere would be: the stand-in for Slack then runs unchecked) and starts `make run` there with a
PATH holding only python3, make and touch, so that redis-server, PostgreSQL and everything else on
this machine are out of reach. The clock starts before the clone and stops when GET /local answers
200. `--cold` runs pip without its download cache (PIP_NO_CACHE_DIR=1), as on a machine that never
installed these packages; without it pip's cache is used, as on a second try.

Usage: python bench/first_run.py [--runs N] [--cold] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("python3", "make", "touch")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_path(folder: Path) -> str:
    """A PATH with nothing but TOOLS (the base interpreter, not this virtualenv's)."""
    folder.mkdir()
    python = Path(getattr(sys, "_base_executable", sys.executable))
    for tool in TOOLS:
        found = python if tool == "python3" else shutil.which(tool)
        if found is None:
            sys.exit(f"{tool} is not installed")
        (folder / tool).symlink_to(found)
    return str(folder)


def one_run(cold: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="handrail-first-run-") as scratch:
        where = Path(scratch)
        port = free_port()
        env = {"PATH": bare_path(where / "bin"), "HOME": str(where), "PORT": str(port), "LANG": "C.UTF-8"}
        if cold:
            env["PIP_NO_CACHE_DIR"] = "1"
        started = time.perf_counter()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(where / "handrail")], check=True)
        cloned = time.perf_counter()
        make = subprocess.Popen(
            ["make", "-s", "run"],
            cwd=where / "handrail",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while True:
                if make.poll() is not None:
                    sys.exit(f"make run ended with {make.returncode} before the page answered")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/local", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)  # polling the page: what a person reloading it would see
            answered = time.perf_counter()
        finally:
            os.killpg(make.pid, signal.SIGINT)
            make.wait(60)
    return {"clone_s": round(cloned - started, 2), "page_s": round(answered - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="pip without its download cache")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args()
    if shutil.which("redis-server") and not args.json:
        print("redis-server is installed here; the runs cannot reach it (PATH holds only python3, make, touch)")
    runs = []
    for number in range(args.runs):
        run = one_run(args.cold)
        runs.append(run)
        if not args.json:
            print(f"run {number + 1}: cloned in {run['clone_s']} s, page answered {run['page_s']} s after the start")
    print(json.dumps({"bench": "first_run", "cold": args.cold, "runs": runs}))


if __name__ == "__main__":
    main()
