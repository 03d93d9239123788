"""A Handrail web replica whose clock the test moves: `python -m tests.replica`.

It starts the server the way `handrail web` does (Settings from the environment, the config file,
build_services, migrate, create_app, uvicorn on $PORT, bound to loopback), with one difference:
its clock reads the time from the file named by $HANDRAIL_TEST_CLOCK, an ISO-8601 UTC timestamp.
Several replicas reading one file share one clock, and a test moves them all at once by replacing
the file (write to a temporary file, then os.replace, so a reader never sees half a timestamp).

Once it serves, uvicorn logs "Application startup complete."
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

CLOCK_VARIABLE = "HANDRAIL_TEST_CLOCK"
READY = "Application startup complete"


class FileClock:
    """The time written in a file, read anew on every call."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        when = datetime.fromisoformat(self.path.read_text(encoding="utf-8").strip())
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def set_time(path: Path, when: datetime) -> None:
    """Move every FileClock reading `path` to `when`, atomically."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(when.astimezone(UTC).isoformat(), encoding="utf-8")
    os.replace(partial, path)


def main() -> int:
    from bot.config import ConfigError, Settings, load_config

    clock_file = os.environ.get(CLOCK_VARIABLE)
    if not clock_file:
        print(f"replica: set {CLOCK_VARIABLE} to the file that holds the time", file=sys.stderr)
        return 2
    clock = FileClock(Path(clock_file))
    clock.now()  # an unreadable clock stops the replica here, not in its first request

    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # the test gives every variable; no .env
    missing = settings.missing_slack_credentials()
    if missing:
        print(f"replica: set {' and '.join(missing)}", file=sys.stderr)
        return 2
    try:
        config = load_config(settings.handrail_config)
    except ConfigError as error:
        print(f"replica: {error}", file=sys.stderr)
        return 2

    import uvicorn

    from bot.app import create_app
    from bot.services import build_services
    from storage.db import migrate

    services = build_services(settings, config, clock)
    migrate(services.db.engine)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(services), host="127.0.0.1", port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
