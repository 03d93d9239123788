"""`handrail` command line: web (serve everything on $PORT), worker (the sweeps alone), migrate,
config-check, webhook-key.

A problem with the environment or the config file stops it with exit code 2 and one line per
problem on stderr, naming the variable or the key; it never ends in a traceback."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from bot.webhooks import agent_key

SWITCH_INTERVAL = 0.001  # seconds
DESCRIPTION = "Handrail: human approval gates, escalation and incident control for AI agents, in Slack."

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from bot.config_changes import ConfigChange
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


def _migrate(engine: Engine, url: str) -> None:
    """Bring the database up to date; one that cannot be reached is a sentence, not a traceback."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from storage.db import migrate

    try:
        migrate(engine)
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


def _services(settings: Settings) -> Services:
    """Config checked before anything else is touched, then the database brought up to date."""
    from bot.services import build_services

    logs.configure()  # before anything logs: the config's warnings, the migration, uvicorn, the scheduler
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

    return _serve(create_app(services), host or "0.0.0.0", settings.port)


def _serve(app: FastAPI, host: str, port: int) -> int:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_config=logs.config(), log_level="info")
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
    return _serve(app, host, settings.port)


def worker(settings: Settings) -> int:
    """The sweeps and the outbox without the web server, for those who run web replicas with
    HANDRAIL_SCHEDULER=off."""
    if problem := _missing_credentials(settings):
        return _fail(problem)
    services = _services(settings)

    from bot.scheduler import start_sweeps

    async def work() -> None:
        await services.start()
        sweeps = start_sweeps(services)
        services.deliverer.kick()
        heartbeat = asyncio.create_task(services.presence.run_forever(services.work))
        try:
            await services.deliverer.run_forever()
        finally:
            heartbeat.cancel()
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
        sys.stdout = open(os.devnull, "w")  # so that the flush at exit does not fail too
        return 2
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="handrail", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"handrail {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "web",
        help="serve Slack events, the agents' API and health checks on $PORT; without Slack credentials, "
        "local mode (the page at /local)",
    )
    serve.add_argument("--host", help="the address to listen on (default 0.0.0.0; 127.0.0.1 in local mode)")
    serve.add_argument(
        "--expose", action="store_true", help="let local mode listen beyond loopback (its page acts as any user)"
    )
    sub.add_parser("worker", help="run the escalation and outbox sweeps without the web server")
    sub.add_parser("migrate", help="bring the database schema up to date")
    check = sub.add_parser(
        "config-check",
        help="validate a config file; with --agent, show the agent's alert rules; with --action too, which policy "
        "a request would get",
    )
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
    key = sub.add_parser("webhook-key", help="print the key an agent uses to verify callbacks")
    key.add_argument("agent")
    trail = sub.add_parser("audit", help="export the audit trail, or check an export against the database")
    trail_sub = trail.add_subparsers(dest="audit_command", required=True)
    export = trail_sub.add_parser(
        "export", help="write the events oldest first, as JSON lines or CSV, to standard output or --out"
    )
    check_export = trail_sub.add_parser(
        "verify", help="check an export against the database: every event of its range, unaltered, none besides"
    )
    check_export.add_argument("file", help="the export (.csv is read as CSV, anything else as JSON lines)")
    for command in (export, check_export):
        command.add_argument("--since", help="7d, 24h, or a time with a zone (default: the first event)")
        command.add_argument("--until", help="7d, 24h, or a time with a zone; excluded (default: now)")
        command.add_argument("--agent", help="only the events about this agent")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="default: %(default)s")
    export.add_argument("--out", help="a file to write (default: standard output)")
    check_export.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file's name")
    play = sub.add_parser("demo", help="run the demo agents against a Handrail in local mode, until Ctrl-C")
    play.add_argument("--url", default="http://localhost:3000", help="where Handrail answers (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "demo":  # an agent of the running server: this process reads no settings
        return demo(args.url)

    try:
        if args.command == "config-check" and args.path:  # a file named: the environment plays no part
            checked = check_config(Path(args.path))
            return config_check(checked, args.path, args.agent, args.action, args.fact)
        settings = load_settings()
        if args.command == "web":
            return web(settings, args.host, args.expose)
        if args.command == "worker":
            return worker(settings)
        if args.command == "migrate":
            from storage.db import make_engine

            logs.configure()
            _migrate(make_engine(settings.database_url), settings.database_url)
            return 0
        if args.command == "audit":
            return audit_command(settings, args)
        if args.command == "config-check":
            checked = check_config(settings.handrail_config)
            return config_check(checked, str(settings.handrail_config), args.agent, args.action, args.fact)
        if args.command == "webhook-key":
            if args.agent not in check_config(settings.handrail_config).config.agents:
                return _fail(f"no agent {args.agent!r} in {settings.handrail_config}")
            secret = settings.handrail_webhook_secret
            if secret is None or not secret.get_secret_value():
                return _fail("set HANDRAIL_WEBHOOK_SECRET first")
            print(agent_key(secret.get_secret_value(), args.agent))
            return 0
    except ConfigError as error:
        return _fail(*error.lines())
    return 2


if __name__ == "__main__":
    sys.exit(main())
