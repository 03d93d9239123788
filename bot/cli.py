"""`handrail` command line (`handrail <command> --help` tells each one's options):

  web             serve Slack events, the agents' API and health checks on $PORT; without Slack
                  credentials, local mode (the page at /local)
  worker          the escalation and outbox sweeps without the web server
  migrate         bring the database schema up to date, saying from which revision to which
  config check    validate a config file (`config-check` is the same command)
  token create    a new agent token (or with --admin the admin token) and the line to paste
  webhook-key     the key an agent uses to verify callbacks
  approvals list  the newest approval requests in the database
  outbox          dead letters (messages Handrail gave up sending): list, retry or drop them
  audit export    the audit trail as JSON lines or CSV; `audit verify` checks an export
  demo            the demo agents against a Handrail in local mode
  mcp-proxy       the MCP proxy of the client package (handrail-client[mcp]), given the rest of the line
  version         the installed version (as --version)

What scripts read goes to stdout; notes, warnings and progress bars (only on a terminal) go to
stderr. Exit codes: 0 done; 2 a usage mistake, or a problem with the environment, the config file
or the database: one line per problem on stderr, naming the variable or the key, never a
traceback (`audit verify` also exits 2 when the export does not match); `outbox retry` and `outbox
drop` exit 1 when a row named is unknown or not dead (then nothing is changed); `mcp-proxy` exits
with the proxy's own code."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from bot import logs
from bot.config import (
    CheckedConfig,
    ConfigError,
    HandrailConfig,
    Problem,
    Settings,
    check_config,
    load_settings,
    package_version,
    redact,
    where,
)
from bot.config.durations import format_duration
from bot.models import Status
from bot.webhooks import agent_key

SWITCH_INTERVAL = 0.001  # seconds
DESCRIPTION = "Handrail: human approval gates, escalation and incident control for AI agents, in Slack."

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import Connection, Engine, Row
    from sqlalchemy.orm import Session

    from bot.config_changes import ConfigChange
    from bot.deadletters import DeadLetter
    from bot.services import Services


log = logging.getLogger(__name__)


def _fail(*lines: str) -> int:
    for line in lines:
        print(f"handrail: {line}", file=sys.stderr)
    return 2


def _warn(checked: CheckedConfig, source: str) -> None:
    for warning in checked.warnings:
        print(f"handrail: {where(source, warning, 'warning')}", file=sys.stderr)


def _config(settings: Settings) -> CheckedConfig:
    """The config file, checked against this environment: problems stop the start, warnings go to
    the log (configured already) and it goes on."""
    checked = check_config(settings.handrail_config)
    problems = settings.problems_with(checked.config)
    if problems:
        raise ConfigError("", problems)
    for warning in checked.warnings:
        log.warning("%s", where(str(settings.handrail_config), warning))
    return checked


@contextmanager
def _database(engine: Engine, url: str) -> Iterator[None]:
    """A database that cannot be reached (or whose driver is missing) is a ConfigError naming
    DATABASE_URL in a sentence, not a traceback."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    try:
        yield
    except (DBAPIError, ArgumentError, ImportError) as error:
        cause = error.orig if isinstance(error, DBAPIError) else error
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        check = "that its directory exists and can be written to"
        if engine.dialect.name != "sqlite":
            check = "that the server is running and that the host, port, database name and credentials are right"
        message = (
            f"cannot use the database at {redact(url)} ({reason}): check {check}; it should look like "
            "postgresql://user:password@host:5432/dbname or sqlite:///handrail.db"
        )
        raise ConfigError("", [Problem("DATABASE_URL", message)]) from None


def _migrate(engine: Engine, url: str) -> None:
    """Bring the database up to date."""
    from storage.db import migrate

    with _database(engine, url):
        migrate(engine)


def _revision(connection: Connection) -> str | None:
    """The schema's Alembic revision; None for a database never migrated (nothing is created).
    Alembic's INFO lines about its context are left out: the migration itself writes them once."""
    from alembic.runtime.migration import MigrationContext

    alembic = logging.getLogger("alembic.runtime.migration")
    level = alembic.level
    alembic.setLevel(logging.WARNING)
    try:
        return MigrationContext.configure(connection).get_current_revision()
    finally:
        alembic.setLevel(level)


def _head(url: str) -> str | None:
    """The newest revision this version of Handrail knows."""
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def migrate_command(settings: Settings) -> int:
    """`handrail migrate`: one line on stdout saying what it did (the URL without its password)."""
    from storage.db import make_engine, migrate

    logs.configure(log_format=settings.handrail_log_format)
    url = settings.database_url
    engine = make_engine(url, pool_size=1)
    try:
        with _database(engine, url):
            with engine.connect() as connection:
                before = _revision(connection)
            migrate(engine)
            with engine.connect() as connection:
                after = _revision(connection)
    finally:
        engine.dispose()
    if before == after:
        print(f"{redact(url)}: already at {after}")
    else:
        print(f"migrated {redact(url)} from {before or 'empty'} to {after}")
    return 0


def _services(settings: Settings) -> Services:
    """Config checked before anything else is touched, then the database brought up to date."""
    from bot.services import build_services

    # Before anything logs: the config's warnings, the migration, uvicorn, the scheduler.
    logs.configure(log_format=settings.handrail_log_format)
    # The event loop gives up the GIL at every socket call; while worker threads run SQL, it waits
    # up to this long to take it back, for each request it answers (Python's default: 5 ms).
    sys.setswitchinterval(SWITCH_INTERVAL)
    checked = _config(settings)
    services = build_services(settings, checked.config)
    _migrate(services.db.engine, settings.database_url)
    services.presence.join()  # refuses a second process on this database without Redis
    note_config(services, settings)
    return services


def note_config(services: Services, settings: Settings) -> ConfigChange | None:
    """A process starting with a config file unlike the last one this deployment ran with records
    one `config.changed` event (one across replicas starting together: bot/config_changes.py)."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot import config_changes

    try:
        data = settings.handrail_config.read_bytes()
        with services.db.transaction() as session:
            change = config_changes.note_start(
                session,
                data=data,
                config=services.config,
                deployed_by=settings.handrail_deployed_by,
                now=services.clock.now(),
            )
    except (OSError, SQLAlchemyError) as error:  # the audit trail misses it; the agents still get a server
        log.error("could not record which config this process started with: %s", error)
        return None
    if change is not None:
        log.info("config %s recorded as changed, by %s", change.short, change.deployed_by or "an unnamed deploy")
    return change


def _missing_credentials(settings: Settings) -> str | None:
    missing = settings.missing_slack_credentials()
    if not missing:
        return None
    alternative = " (or SLACK_APP_TOKEN, for Socket Mode)" if missing == ["SLACK_SIGNING_SECRET"] else ""
    return f"set {' and '.join(missing)}{alternative} from your Slack app's settings to start; see README.md"


def web(settings: Settings, host: str | None, expose: bool) -> int:
    if settings.local_mode:
        return local_web(settings, host or "127.0.0.1", expose)
    if problem := _missing_credentials(settings):
        return _fail(problem)
    services = _services(settings)
    from bot.app import create_app

    return _serve(create_app(services), host or "0.0.0.0", settings)


def _serve(app: FastAPI, host: str, settings: Settings) -> int:
    import uvicorn

    log_config = logs.config(log_format=settings.handrail_log_format)
    uvicorn.run(app, host=host, port=settings.port, log_config=log_config, log_level="info")
    return 0


def local_web(settings: Settings, host: str, expose: bool) -> int:
    """Local mode (local/mode.py): the same app, with a stand-in for Slack and the page at /local."""
    from local import mode

    try:
        mode.check_host(host, expose)
    except mode.Exposed as error:
        return _fail(str(error))
    local = mode.prepare(settings)
    services = _services(local.settings)
    from bot.app import create_app

    app = create_app(services)
    mode.mount(app, services, local)
    shown = "localhost" if host in ("127.0.0.1", "localhost", "0.0.0.0", "::") else host
    print(f"handrail: local mode, no Slack workspace: open http://{shown}:{settings.port}/local", file=sys.stderr)
    return _serve(app, host, settings)


def worker(settings: Settings) -> int:
    """The sweeps and the outbox without the web server, for those who run web replicas with
    HANDRAIL_SCHEDULER=off."""
    if problem := _missing_credentials(settings):
        return _fail(problem)
    services = _services(settings)

    from bot.scheduler import start_sweeps

    async def work() -> None:
        # SIGTERM (a platform or `docker stop` stopping it) ends it as Ctrl-C does: the sweep in
        # progress finishes and the heartbeat row goes. Without a handler, Python dies at once, and
        # as a container's process 1 it would not die at all until the engine's SIGKILL.
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await services.start()
        sweeps = start_sweeps(services)
        services.deliverer.kick()
        heartbeat = asyncio.create_task(services.presence.run_forever(services.work))
        delivering = asyncio.create_task(services.deliverer.run_forever())
        stop = asyncio.create_task(stopping.wait())
        log.info("worker: sweeping every %s", format_duration(settings.handrail_sweep_interval))
        try:
            await asyncio.wait([delivering, stop], return_when=asyncio.FIRST_COMPLETED)
            if delivering.done():
                delivering.result()  # it ended by itself: its error ends the worker
            log.info("worker: stopping")
        finally:
            for task in (delivering, stop, heartbeat):
                task.cancel()
            await asyncio.gather(delivering, stop, heartbeat, return_exceptions=True)
            await sweeps.stop()
            await services.aclose()

    asyncio.run(work())
    return 0


def _count(number: int, noun: str, plural: str | None = None) -> str:
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def _setting(value: object) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, float) and 0 < value < 1:
        return f"{value:.4g} ({value * 100:.4g}%)"
    return str(value)


def alert_rules(config: HandrailConfig, agent_id: str) -> list[str]:
    """An agent's effective alert rules (built-in defaults, then `alerts:`, then its own), one line
    each, with where each one's messages go."""
    from bot.alerts.messages import destinations
    from bot.config.alerts import RULES

    alerts = config.alerts_of(agent_id)
    lines = [f"{agent_id} alert rules:"]
    for name in RULES:
        rule = alerts.rule(name)
        settings = " ".join(f"{key}={_setting(value)}" for key, value in rule.model_dump().items() if key != "enabled")
        if not rule.active:
            lines.append(f"  {name}: off ({settings})")
            continue
        to = ", ".join(destinations(config, agent_id, name))
        lines.append(f"  {name}: on, to {to} ({settings})")
    lines.append(f"  on_run_failure: {alerts.on_run_failure}; finance_channel: {alerts.finance_channel or '-'}")
    return lines


def config_check(checked: CheckedConfig, source: str, agent: str | None, action: str | None, facts: list[str]) -> int:
    """Validate a config (ConfigError lists its problems); with an agent, show its alert rules;
    with a sample request, also the policy it would get."""
    config = checked.config
    values: dict[str, float] = {}
    if agent is not None and agent not in config.agents:
        return _fail(f"no agent {agent!r} in {source} (its agents: {', '.join(config.agents)})")
    if action is not None or facts:
        if agent is None or action is None:
            return _fail("give both --agent and --action to see which policy a request would get")
        for fact in facts:
            name, _, number = fact.partition("=")
            try:
                values[name.strip()] = float(number)
            except ValueError:
                return _fail(f"--fact {fact!r}: write NAME=NUMBER, e.g. discount_pct=12")
    agent_policies = sum(len(a.policies) for a in config.agents.values())
    print(
        f"ok: {_count(len(config.agents), 'agent')} ({', '.join(config.agents)}); "
        f"{_count(len(config.policies), 'global policy', 'global policies')}, "
        f"{_count(agent_policies, 'agent policy', 'agent policies')}"
    )
    _warn(checked, source)
    if agent is not None:
        print("\n".join(alert_rules(config, agent)))
    if agent is not None and action is not None:
        from bot.policy import choose

        print(f"{agent} {action}: {choose(config, agent, action, values).explain()}")
    return 0


def _when(option: str, text: str | None, now: datetime) -> datetime | None:
    """`7d` (that long before now) or a time with a zone; ValueError names the option."""
    from bot.config import parse_duration

    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        form = "write a duration (7d, 24h) or a time, e.g. 2026-11-30T00:00:00Z"
        raise ValueError(f"{option} {text!r}: {form}") from None
    if when.tzinfo is None:
        raise ValueError(f"{option} {text!r}: give a time zone, e.g. 2026-11-30T00:00:00Z")
    return when.astimezone(UTC)


def _progress(total: int | None, what: str) -> Any:
    """A progress bar on stderr when it is a terminal; None in a pipe (the command stays quiet)."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True)
    )
    progress.add_task(what, total=total)
    return progress


def audit_command(settings: Settings, args: argparse.Namespace) -> int:
    """`handrail audit export` (events oldest first as JSON lines or CSV, constant memory) and
    `handrail audit verify` (an export against the database; events are not hash-chained)."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.clock import SystemClock
    from storage.db import Database

    now = SystemClock().now()
    try:
        since, until = _when("--since", args.since, now), _when("--until", args.until, now)
    except ValueError as error:
        return _fail(str(error))
    if args.audit_command == "export":
        until = until or now
    if since and until and since >= until:
        return _fail(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    db = Database(settings.database_url, pool_size=1)
    try:
        with db.transaction() as session:
            if args.audit_command == "export":
                return _export(session, args, since, until)
            return _verify(session, args, since, until)
    except SQLAlchemyError as error:
        reason = (str(getattr(error, "orig", None) or error).strip().splitlines() or [type(error).__name__])[0]
        return _fail(f"cannot read the audit trail at {redact(settings.database_url)} ({reason}); run handrail migrate")
    finally:
        db.dispose()


def _export(session: Session, args: argparse.Namespace, since: datetime | None, until: datetime | None) -> int:
    from bot import audit

    progress = _progress(audit.count(session, agent=args.agent, since=since, until=until), "exporting")
    try:
        out = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout
    except OSError as error:
        return _fail(f"--out {args.out}: {error.strerror or error}")
    try:
        if progress:
            progress.start()
        done = audit.export(
            session,
            out=out,
            fmt=args.format,
            agent=args.agent,
            since=since,
            until=until,
            progress=(lambda n: progress.advance(progress.task_ids[0], n)) if progress else None,
        )
        out.flush()
    except BrokenPipeError:  # the reader stopped reading (`| head`)
        return _pipe_closed()
    finally:
        if progress:
            progress.stop()
        if args.out:
            out.close()
    if progress:
        ids = f"ids {done.first_id}–{done.last_id}" if done.count else "none"
        range_ = f"--since {audit.iso(since)} " if since else ""
        assert until is not None
        print(
            f"handrail: exported {done.count} events ({ids}); check the file with: handrail audit verify "
            f"{args.out or 'FILE'} {range_}--until {audit.iso(until)}"
            + (f" --agent {args.agent}" if args.agent else ""),
            file=sys.stderr,
        )
    return 0


def _stamp(text: object) -> datetime:
    """An event's `at` as an export writes it (ISO 8601 in UTC)."""
    when = datetime.fromisoformat(text) if isinstance(text, str) else None
    if when is None or when.tzinfo is None:
        raise ValueError(f"{str(text)[:40]!r} is not an event's time (ISO 8601 with a zone)")
    return when


def _verify(session: Session, args: argparse.Namespace, since: datetime | None, until: datetime | None) -> int:
    from bot import audit

    path = Path(args.file)
    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    try:
        with path.open(encoding="utf-8", newline="") as file:
            records = audit.parse_csv(file) if fmt == "csv" else audit.parse_jsonl(file)
            if since is None or until is None:  # the file's own range, from its first and last event
                first: str | None = None
                last = ""
                for record in records:
                    first = first or record["at"]
                    last = record["at"]
                if first is None:
                    return _fail(f"{path} has no events: give --since and --until to check that none are missing")
                since = since or _stamp(first)
                until = until or _stamp(last) + timedelta(microseconds=1)
                file.seek(0)
                records = audit.parse_csv(file) if fmt == "csv" else audit.parse_jsonl(file)
            verdict = audit.check_file(
                session, records=records, csv_form=fmt == "csv", agent=args.agent, since=since, until=until
            )
    except OSError as error:
        return _fail(f"{path}: {error.strerror or error}")
    except (audit.Unreadable, UnicodeDecodeError, ValueError) as error:
        return _fail(f"{path}: {error}")
    scope = f"from {audit.iso(since)} to {audit.iso(until)}" + (f", agent {args.agent}" if args.agent else "")
    if verdict.problems:
        return _fail(
            *verdict.told,
            f"{path} does not match the audit trail {scope}: {verdict.problems} problem(s); "
            f"{verdict.in_file} events in the file, {verdict.in_database} in the database",
        )
    print(f"ok: {verdict.in_file} events {scope} match the database, ids increasing with none missing")
    print(f"note: {audit.NOT_CHAINED}")
    return 0


def demo(url: str) -> int:
    """The demo agents against a running Handrail (local mode's demo config), until Ctrl-C."""
    from local.demo import DemoFailed, run_demo

    try:
        asyncio.run(run_demo(url))
    except DemoFailed as failed:
        return _fail(str(failed))
    except KeyboardInterrupt:
        print("handrail: the demo agents stopped", file=sys.stderr)
    return 0


TOKEN_PREFIX = "hr_"  # makes a Handrail token recognisable (in a secret store, or a secret scanner's rules)


def _configured_agents(path: Path) -> list[str] | None:
    """The agent ids a config file names, read loosely (a file being edited need not pass the check
    yet); None when there is no file to read."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    agents = data.get("agents") if isinstance(data, dict) else None
    return [str(agent) for agent in agents] if isinstance(agents, dict) else None


def _config_path() -> Path | None:
    """$HANDRAIL_CONFIG (or its default); None when the environment cannot be read."""
    try:
        return load_settings().handrail_config
    except ConfigError:
        return None


def token_create(agent: str | None) -> int:
    """`handrail token create <agent>` (None: `--admin`): a new token on stdout, then the config's
    line holding its SHA-256 (the digest the server compares, bot.api.token_agent). Handrail keeps
    no token, so this one is shown once; no database is needed."""
    from bot.config.models import AGENT_ID

    if agent is not None and not re.fullmatch(AGENT_ID, agent):
        return _fail(
            f"{agent!r} is not an agent id: write 1 to 63 lower-case letters, digits, - or _, starting with a "
            "letter or a digit, e.g. lead-router"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = "admin_token_sha256" if agent is None else "token_sha256"
    print(token)
    print(f"{key}: {hashlib.sha256(token.encode()).hexdigest()}")
    path = _config_path()
    agents = _configured_agents(path) if path is not None else None
    if agent is not None and agents is not None and agent not in agents:
        print(f"handrail: warning: no agent {agent!r} in {path} yet: add it under agents:", file=sys.stderr)
    if sys.stderr.isatty():
        give = "it reads GET /v1/audit" if agent is None else f"give it to {agent} (Authorization: Bearer <token>)"
        place = "at the top level" if agent is None else f"under agents.{agent}"
        config = f"{path} ($HANDRAIL_CONFIG)" if path is not None else "$HANDRAIL_CONFIG"
        print(
            f"handrail: the token is shown this once: {give}; the {key} line goes {place} in {config}", file=sys.stderr
        )
    return 0


APPROVAL_COLUMNS = ("id", "status", "agent", "action", "created_at", "expires/decided", "summary")
SUMMARY_SHOWN = 60  # characters of a summary in a listing
ACTION_SHOWN = 40


def _listing_limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from 1 to 1000")
    return limit


def _one_line(text: str | None, limit: int) -> str:
    """Someone else's text fit for a terminal: no control, bidi or invisible characters (an escape
    sequence could rewrite the screen), on one line, cut to `limit` characters."""
    from bot.mrkdwn import clean

    shown = " ".join(clean(text or "").split())
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _utc(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else "-"


def _approval_table(rows: list[Row[Any]]) -> list[str]:
    """Plain-text columns, as wide as their widest value: the same on a terminal and in a pipe."""
    cells = [
        (
            row.id,
            row.status,
            row.agent,
            _one_line(row.action, ACTION_SHOWN),
            _utc(row.created_at),
            _utc(row.decided_at or row.expires_at),
            _one_line(row.summary, SUMMARY_SHOWN),
        )
        for row in rows
    ]
    return _table(APPROVAL_COLUMNS, cells)


def _table(columns: tuple[str, ...], cells: Sequence[tuple[str, ...]]) -> list[str]:
    """The header and the rows, each column as wide as its widest cell."""
    widths = [max(map(len, column)) for column in zip(columns, *cells, strict=True)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [columns, *cells]
    ]


def _approval_record(row: Row[Any]) -> str:
    """One JSON line; ASCII only, so no character of an agent's text reaches a terminal raw."""
    from bot.audit import iso

    record = {
        "id": row.id,
        "status": row.status,
        "agent": row.agent,
        "action": row.action,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "decided_at": iso(row.decided_at) if row.decided_at else None,
        "summary": _one_line(row.summary, SUMMARY_SHOWN),
        "target_id": row.target_id,
        "customer": row.customer,
        "decided_by": row.decided_by,
    }
    return json.dumps(record, ensure_ascii=True)


@contextmanager
def _migrated(url: str, *, write: bool = False) -> Iterator[Session]:
    """A session on a database at this version's schema (a ConfigError naming DATABASE_URL
    otherwise); read-only unless `write` (on PostgreSQL a read-only transaction, on SQLite
    query_only). With `write`, what the block did is committed when it returns."""
    from sqlalchemy import make_url
    from sqlalchemy.orm import Session

    from storage.db import make_engine, normalize_url

    unmigrated = f"{redact(url)} has no Handrail tables yet: run `handrail migrate` first"
    database = make_url(normalize_url(url)).database
    if url.startswith("sqlite") and database and database != ":memory:" and not Path(database).exists():
        raise ConfigError("", [Problem("DATABASE_URL", unmigrated)])  # connecting would create the file
    engine = make_engine(url, pool_size=1)
    try:
        with _database(engine, url), engine.connect() as connection:
            if not write and engine.dialect.name == "postgresql":
                connection.execution_options(postgresql_readonly=True)
            elif not write:
                connection.exec_driver_sql("PRAGMA query_only = ON")
            revision, head = _revision(connection), _head(url)
            if revision is None:
                raise ConfigError("", [Problem("DATABASE_URL", unmigrated)])
            if revision != head:
                message = f"{redact(url)} is at revision {revision}, not {head}: run `handrail migrate` first"
                raise ConfigError("", [Problem("DATABASE_URL", message)])
            connection.rollback()  # the revision's read ends; the block's transaction begins
            with Session(connection) as session:
                yield session
                if write:
                    session.commit()
    finally:
        engine.dispose()


def _newest_approvals(url: str, args: argparse.Namespace) -> list[Row[Any]]:
    from storage.repositories import Approvals

    with _migrated(url) as session:
        return Approvals(session).newest(agent=args.agent, status=args.status, limit=args.limit)


def approvals_list(settings: Settings, args: argparse.Namespace) -> int:
    """`handrail approvals list`: the newest requests first, as a table or as JSON lines."""
    rows = _newest_approvals(settings.database_url, args)
    if not rows:
        if args.format == "table":
            filters = " ".join(f"--{name} {value}" for name in ("agent", "status") if (value := getattr(args, name)))
            print(f"handrail: no approvals{' with ' + filters if filters else ''}", file=sys.stderr)
        return 0
    lines = _approval_table(rows) if args.format == "table" else [_approval_record(row) for row in rows]
    try:
        print("\n".join(lines))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped reading (`| head`)
        return _pipe_closed()
    return 0


OUTBOX_COLUMNS = ("id", "kind", "agent", "about", "attempts", "died_at", "last_error")
ERROR_SHOWN = 80  # characters of a last error in the table
ERROR_KEPT = 1000  # in a JSON line


def _letter_table(letters: list[DeadLetter]) -> list[str]:
    cells = [
        (
            str(letter.id),
            letter.kind,
            letter.agent or "-",
            _one_line(":".join(letter.about), 60),
            str(letter.attempts),
            _utc(letter.died_at),
            _one_line(letter.last_error, ERROR_SHOWN),
        )
        for letter in letters
    ]
    return _table(OUTBOX_COLUMNS, cells)


def _letter_record(letter: DeadLetter) -> str:
    from bot.audit import iso

    record = {
        "id": letter.id,
        "kind": letter.kind,
        "agent": letter.agent,
        "about": {"type": letter.about[0], "id": _one_line(letter.about[1], 200)},
        "target_id": letter.target_id,
        "attempts": letter.attempts,
        "created_at": iso(letter.created_at),
        "died_at": iso(letter.died_at) if letter.died_at else None,
        "last_error": _one_line(letter.last_error, ERROR_KEPT) if letter.last_error else None,
    }
    return json.dumps(record, ensure_ascii=True)


def _print(lines: list[str]) -> int:
    try:
        if lines:
            print("\n".join(lines))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped reading (`| head`)
        return _pipe_closed()
    return 0


def _operator() -> str:
    """`cli:<login name>`, the actor of what the command changes."""
    import getpass

    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name, no $USER
        name = "unknown"
    return "cli:" + (_one_line(name, 90).replace(" ", "_") or "unknown")


def outbox_command(settings: Settings, args: argparse.Namespace) -> int:
    """`handrail outbox list|retry|drop`."""
    from bot import deadletters
    from bot.clock import SystemClock

    url = settings.database_url
    if args.outbox_command == "list":
        with _migrated(url) as session:
            letters = deadletters.dead_letters(session, agent=args.agent, kind=args.kind, limit=args.limit)
        if not letters and args.format == "table":
            filters = " ".join(f"--{name} {value}" for name in ("agent", "kind") if (value := getattr(args, name)))
            print(f"handrail: no dead letters{' with ' + filters if filters else ''}", file=sys.stderr)
        return _print(
            _letter_table(letters) if args.format == "table" and letters else list(map(_letter_record, letters))
        )
    if args.outbox_command == "retry" and args.ids and (args.agent or args.kind):
        return _fail("--agent and --kind go with --all; to retry rows by id, name only the ids")
    now, by = SystemClock().now(), _operator()
    try:
        with _migrated(url, write=True) as session:
            if args.outbox_command == "drop":
                done = deadletters.drop(session, args.ids, by=by, reason=args.reason, now=now)
            elif args.all:
                done = deadletters.retry_all(
                    session, agent=args.agent, kind=args.kind, by=by, reason=args.reason, now=now
                )
            else:
                done = deadletters.retry(session, args.ids, by=by, reason=args.reason, now=now)
    except deadletters.NotDead as error:
        print(f"handrail: {error.message}", file=sys.stderr)
        return 1
    verb = "dropped" if args.outbox_command == "drop" else "queued again"
    lines = [f"{verb} {letter.id} ({letter.kind}, {_one_line(':'.join(letter.about), 60)})" for letter in done.letters]
    if not done.letters:
        print("handrail: no dead letters to retry", file=sys.stderr)
    elif args.outbox_command == "retry":
        lines.append(
            f"{_count(len(done.letters), 'row')} pending again: the running server sends them within "
            "HANDRAIL_SWEEP_INTERVAL"
        )
    return _print(lines)


def _pipe_closed() -> int:
    """The reader of standard output stopped reading (`| head`): exit 2, without a traceback."""
    sys.stdout = open(os.devnull, "w")  # so that the flush at exit does not fail too
    return 2


def mcp_proxy(argv: list[str]) -> int:
    """`handrail mcp-proxy ...`: the client package's MCP proxy, given everything after the word
    untouched (its --help too). It lives in handrail_client, installed apart, so it is looked up
    only here."""
    import importlib

    try:
        proxy = importlib.import_module("handrail_client.mcp_proxy")
    except ImportError:
        return _fail("the MCP proxy needs the client with its mcp extra: pip install 'handrail-client[mcp]'")
    return int(proxy.main(argv))


EPILOG = """\
exit codes:
  0  done
  1  outbox retry or drop named a row that is unknown or not dead: nothing was changed
  2  a usage mistake, or a problem with the environment, the config file or the database: one line
     per problem on stderr, naming the variable or the key; also an export that audit verify finds
     different from the database
  mcp-proxy exits with the proxy's own code

What scripts read goes to stdout; notes, warnings and progress bars (only on a terminal) to stderr."""


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, about: str, **options: Any
) -> argparse.ArgumentParser:
    """A subcommand whose line in its parent's list (`help`) also heads its own --help (`description`)."""
    options.setdefault("description", _sentence(about))
    return sub.add_parser(name, help=about, **options)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _config_check_arguments(check: argparse.ArgumentParser) -> None:
    check.add_argument("path", nargs="?", help="default: $HANDRAIL_CONFIG")
    check.add_argument("--agent", help="an agent: show its alert rules (and, with --action, a sample request's policy)")
    check.add_argument("--action", help="the action of the sample request, e.g. quote.create")
    check.add_argument(
        "--fact",
        action="append",
        default=[],
        metavar="NAME=NUMBER",
        help="a numeric fact of the sample request (repeatable)",
    )


def _serving_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = _command(
        sub,
        "web",
        "serve Slack events, the agents' API and health checks on $PORT; without Slack credentials, "
        "local mode (the page at /local)",
    )
    serve.add_argument("--host", help="the address to listen on (default 0.0.0.0; 127.0.0.1 in local mode)")
    serve.add_argument(
        "--expose", action="store_true", help="let local mode listen beyond loopback (its page acts as any user)"
    )
    _command(sub, "worker", "run the escalation and outbox sweeps without the web server")
    _command(
        sub,
        "migrate",
        "bring the database schema up to date",
        description="Bring the database at $DATABASE_URL up to date, and say from which revision to which.",
    )


def _config_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    about = (
        "validate a config file; with --agent, show the agent's alert rules; with --action too, which policy "
        "a request would get"
    )
    config = _command(sub, "config", "check the config file")
    _config_check_arguments(
        _command(config.add_subparsers(dest="config_command", required=True, metavar="<command>"), "check", about)
    )
    _config_check_arguments(_command(sub, "config-check", "the same as config check", description=_sentence(about)))
    token = _command(sub, "token", "make API tokens")
    create = _command(
        token.add_subparsers(dest="token_command", required=True, metavar="<command>"),
        "create",
        "print a new token once, then the line holding its SHA-256 to paste into the config",
        description="Print a new token (shown this once: Handrail keeps only its SHA-256), then the line to "
        "paste into $HANDRAIL_CONFIG: token_sha256 under the agent, or admin_token_sha256 at the top level.",
    )
    whose = create.add_mutually_exclusive_group(required=True)
    whose.add_argument("agent", nargs="?", help="the agent's id, e.g. lead-router")
    whose.add_argument("--admin", action="store_true", help="the admin token, which reads GET /v1/audit")
    key = _command(sub, "webhook-key", "print the key an agent uses to verify callbacks")
    key.add_argument("agent")


def _data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approvals = _command(sub, "approvals", "look at approval requests in the database")
    listing = _command(
        approvals.add_subparsers(dest="approvals_command", required=True, metavar="<command>"),
        "list",
        "print the newest approval requests first",
        description="Print the newest approval requests first: id, status, agent, action, created_at, expires_at "
        "(decided_at once decided) and the summary's first 60 characters.",
    )
    listing.add_argument("--agent", help="only this agent's requests")
    listing.add_argument("--status", choices=get_args(Status), help="only the requests in this status")
    listing.add_argument(
        "--limit", type=_listing_limit, default=50, help="at most this many, 1 to 1000 (default: %(default)s)"
    )
    listing.add_argument(
        "--format",
        choices=["table", "jsonl"],
        default="table",
        help="table: plain-text columns; jsonl: one JSON object a line, with target_id, customer and decided_by "
        "too (default: %(default)s)",
    )
    _outbox_commands(sub)
    trail = _command(sub, "audit", "export the audit trail, or check an export against the database")
    trail_sub = trail.add_subparsers(dest="audit_command", required=True, metavar="<command>")
    export = _command(
        trail_sub, "export", "write the events oldest first, as JSON lines or CSV, to standard output or --out"
    )
    check_export = _command(
        trail_sub, "verify", "check an export against the database: every event of its range, unaltered, none besides"
    )
    check_export.add_argument("file", help="the export (.csv is read as CSV, anything else as JSON lines)")
    for command in (export, check_export):
        command.add_argument("--since", help="7d, 24h, or a time with a zone (default: the first event)")
        command.add_argument("--until", help="7d, 24h, or a time with a zone; excluded (default: now)")
        command.add_argument("--agent", help="only the events about this agent")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="default: %(default)s")
    export.add_argument("--out", help="a file to write (default: standard output)")
    check_export.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file's name")


def _outbox_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: an outbox row's id is a whole number, as outbox list shows")
    return int(text)


def _reason(text: str) -> str:
    if not text.strip() or len(text) > 500:
        raise argparse.ArgumentTypeError("write a reason of 1 to 500 characters")
    return text.strip()


def _outbox_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bot.outbound import Kind

    kinds = [kind.value for kind in Kind]
    outbox = _command(
        sub,
        "outbox",
        "list, retry or drop dead letters: messages Handrail gave up sending",
        description="Dead letters are outbox rows (Slack messages, agents' callbacks, PagerDuty events) that "
        "failed 10 times or with an error no retry can mend. They stay until someone retries or drops them.",
        epilog="exit codes: 0 done; 1 a row named is unknown or not dead (nothing was changed); 2 a usage "
        "mistake or a problem with the database.",
    )
    commands = outbox.add_subparsers(dest="outbox_command", required=True, metavar="<command>")
    listing = _command(
        commands,
        "list",
        "print the dead letters, oldest first",
        description="Print the dead letters, oldest first: id, kind, agent, what it is about, attempts, when it "
        "died and the last error's first 80 characters (control characters removed). Reads only.",
    )
    listing.add_argument("--agent", help="only this agent's")
    listing.add_argument("--kind", choices=kinds, help="only this kind")
    listing.add_argument(
        "--limit", type=_listing_limit, default=50, help="at most this many, 1 to 1000 (default: %(default)s)"
    )
    listing.add_argument(
        "--format",
        choices=["table", "jsonl"],
        default="table",
        help="table: plain-text columns; jsonl: one JSON object a line, with target_id, created_at and up to "
        "1000 characters of the last error (default: %(default)s)",
    )
    retry = _command(
        commands,
        "retry",
        "send dead letters again",
        description="Make dead letters pending again, due now, with their attempts counted afresh; the running "
        "server sends them within HANDRAIL_SWEEP_INTERVAL. Cards, alerts and suggestions show their state as it "
        "is then; callbacks are signed when sent. Audited as outbox.retried, by cli:<your login>.",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=_outbox_id, default=[], metavar="ID", help="rows, as outbox list shows")
    which.add_argument("--all", action="store_true", help="every dead letter (of --agent, of --kind), up to 1000")
    retry.add_argument("--agent", help="with --all: only this agent's")
    retry.add_argument("--kind", choices=kinds, help="with --all: only this kind")
    retry.add_argument("--reason", type=_reason, help="why, for the audit trail")
    drop = _command(
        commands,
        "drop",
        "give up on dead letters for good",
        description="Mark dead letters dropped: never sent, never retried, kept in the database. Audited as "
        "outbox.dropped, by cli:<your login>, with the reason.",
    )
    drop.add_argument("ids", nargs="+", type=_outbox_id, metavar="ID", help="rows, as outbox list shows")
    drop.add_argument("--reason", type=_reason, required=True, help="why, for the audit trail (required)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="handrail", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--version", action="version", version=f"handrail {package_version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="<command>")
    _serving_commands(sub)
    _config_commands(sub)
    _data_commands(sub)
    play = _command(sub, "demo", "run the demo agents against a Handrail in local mode, until Ctrl-C")
    play.add_argument("--url", default="http://localhost:3000", help="where Handrail answers (default: %(default)s)")
    proxy = _command(
        sub,
        "mcp-proxy",
        "run the MCP proxy of the client package (with its mcp extra)",
        description="Run the MCP proxy of the client package, handrail-client[mcp], with the rest of the line as "
        "its arguments: handrail mcp-proxy --help shows its own.",
        add_help=False,
    )
    proxy.add_argument("args", nargs=argparse.REMAINDER, help="the proxy's arguments")
    _command(sub, "version", "print the installed version (as --version)")
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mcp-proxy"]:  # the rest is the proxy's, its options and --help too
        return mcp_proxy(argv[1:])
    args = parser().parse_args(argv)
    if args.command == "version":
        print(f"handrail {package_version()}")
        return 0
    if args.command == "demo":  # an agent of the running server: this process reads no settings
        return demo(args.url)
    if args.command == "token":  # no database; the environment only to find the config file
        return token_create(None if args.admin else args.agent)
    try:
        return _run(args)
    except ConfigError as error:
        return _fail(*error.lines())


def _run(args: argparse.Namespace) -> int:
    if args.command in ("config", "config-check"):
        return _config_check_command(args)
    settings = load_settings()
    if args.command == "web":
        return web(settings, args.host, args.expose)
    if args.command == "worker":
        return worker(settings)
    if args.command == "migrate":
        return migrate_command(settings)
    if args.command == "audit":
        return audit_command(settings, args)
    if args.command == "approvals":
        return approvals_list(settings, args)
    if args.command == "outbox":
        return outbox_command(settings, args)
    if args.command == "webhook-key":
        return webhook_key(settings, args.agent)
    return 2


def _config_check_command(args: argparse.Namespace) -> int:
    """`config check` and `config-check`: a file named is checked without the environment."""
    if args.path:
        return config_check(check_config(Path(args.path)), args.path, args.agent, args.action, args.fact)
    settings = load_settings()
    checked = check_config(settings.handrail_config)
    return config_check(checked, str(settings.handrail_config), args.agent, args.action, args.fact)


def webhook_key(settings: Settings, agent: str) -> int:
    if agent not in check_config(settings.handrail_config).config.agents:
        return _fail(f"no agent {agent!r} in {settings.handrail_config}")
    secret = settings.handrail_webhook_secret
    if secret is None or not secret.get_secret_value():
        return _fail("set HANDRAIL_WEBHOOK_SECRET first")
    print(agent_key(secret.get_secret_value(), agent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
