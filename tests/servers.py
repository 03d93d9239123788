"""Real redis-server and PostgreSQL processes on loopback, for the tests and the benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from glob import glob
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]


class Process:
    """`python -m bot.cli <command>` with its stderr read line by line as it comes. Its stderr is a
    pipe, so it would log JSON lines: it logs text (`LEVEL logger: message`) unless `env` chooses
    with HANDRAIL_LOG_FORMAT (set, or set empty for the choice a pipe gets: JSON)."""

    def __init__(self, command: str, env: dict[str, str], *args: str, cwd: Path = ROOT) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", command, *args],
            env={"HANDRAIL_LOG_FORMAT": "text"} | env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._ended or any(text in line for line in self.lines), timeout)
            if not any(text in line for line in self.lines):
                raise AssertionError(f"{text!r} never logged:\n{''.join(self.lines)}")

    def stop(self) -> str:
        """End the process (SIGTERM, as a platform does) and return all it logged."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(10)
        return "".join(self.lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _drain(stream: IO[str]) -> None:
    """Read a server's log to its end, then close the pipe."""
    with stream:
        stream.read()


def start(command: list[str], ready: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a server and read its log until it says it is ready (no sleeping, no polling); then
    keep draining the log so the server never blocks on a full pipe."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if ready in line:
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process
    raise RuntimeError(f"{command[0]} exited before it was ready:\n{''.join(seen[-20:])}")


def peak_memory_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class RedisServer:
    """A throwaway redis-server that a test can kill and start again on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.process = start(self._command, ready="Ready to accept connections")

    def freeze(self) -> Callable[[], None]:
        """SIGSTOP: connections stay open and nothing answers, as when the network drops without
        closing them. Returns what thaws it."""
        assert self.process is not None
        pid = self.process.pid
        os.kill(pid, signal.SIGSTOP)
        return lambda: os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: what it held in memory is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def start_redis() -> tuple[str, Callable[[], None]]:
    """A throwaway redis-server: (url, stop)."""
    server = RedisServer()
    return server.url, server.stop


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install -y postgresql)")
    return found


class PostgresServer:
    """A throwaway PostgreSQL cluster (run as the postgres user when running as root) that a test
    can stop and start again on the same port and data directory."""

    def __init__(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="handrail-pg-"))
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self._as_user, _postgres_bin("initdb"), "-D", str(self.data / "db"), "-U", "handrail"]
            + ["--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        self.url = f"postgresql+psycopg://handrail@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.process = start(
            [
                *self._as_user,
                _postgres_bin("postgres"),
                "-D",
                str(self.data / "db"),
                "-p",
                str(self.port),
                "-k",
                str(self.data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            ready="ready to accept connections",
        )

    def stop(self) -> None:
        """A fast shutdown, as a restart or fail-over does: open connections are cut, their
        transactions rolled back."""
        if self.process is None:
            return
        subprocess.run(
            [*self._as_user, _postgres_bin("pg_ctl"), "-D", str(self.data / "db"), "stop", "-m", "fast", "-w"],
            check=False,
            capture_output=True,
        )
        self.process.wait(30)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def start_postgres() -> tuple[str, Callable[[], None]]:
    """A throwaway PostgreSQL cluster: (url, stop)."""
    server = PostgresServer()
    return server.url, server.remove
