"""`handrail` command line: web (serve everything on $PORT), worker (the sweeps alone), migrate,
config-check, webhook-key."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot import logs
from bot.config import ConfigError, HandrailConfig, Settings, load_config
from bot.webhooks import agent_key

if TYPE_CHECKING:
    from bot.services import Services


def _fail(message: str) -> int:
    print(f"handrail: {message}", file=sys.stderr)
    return 2


def _config(settings: Settings, path: str | None = None) -> HandrailConfig:
    return load_config(Path(path) if path else settings.handrail_config)


def _services(settings: Settings) -> Services:
    """Config checked before anything else is touched, then the database brought up to date."""
    from bot.services import build_services
    from storage.db import migrate

    config = _config(settings)
    logs.configure()  # before anything logs: the migration, uvicorn, the scheduler
    services = build_services(settings, config)
    migrate(services.db.engine)
    return services


def _missing_credentials(settings: Settings) -> str | None:
    missing = settings.missing_slack_credentials()
    if missing:
        return f"set {' and '.join(missing)} (from your Slack app's settings) to start; see README.md"
    return None


def web(settings: Settings) -> int:
    if problem := _missing_credentials(settings):
        return _fail(problem)
    services = _services(settings)

    import uvicorn

    from bot.app import create_app

    uvicorn.run(create_app(services), host="0.0.0.0", port=settings.port, log_config=logs.config(), log_level="info")
    return 0


def worker(settings: Settings) -> int:
    """The sweeps and the outbox without the web server, for those who run web replicas with
    HANDRAIL_SCHEDULER=off."""
    if problem := _missing_credentials(settings):
        return _fail(problem)
    services = _services(settings)

    from bot.scheduler import start_scheduler

    async def work() -> None:
        await services.start()
        scheduler = start_scheduler(services)
        services.deliverer.kick()
        try:
            await services.deliverer.run_forever()
        finally:
            scheduler.shutdown(wait=False)
            await services.aclose()

    asyncio.run(work())
    return 0


def config_check(config: HandrailConfig, agent: str | None, action: str | None, facts: list[str]) -> int:
    print(
        f"ok: {len(config.agents)} agent(s): {', '.join(config.agents)}; {len(config.policies)} global "
        f"policies, {sum(len(a.policies) for a in config.agents.values())} agent policies"
    )
    if agent is None and action is None and not facts:
        return 0
    if agent is None or action is None:
        return _fail("give both --agent and --action to see which policy a request would get")
    if agent not in config.agents:
        return _fail(f"no agent {agent!r} in the config (agents: {', '.join(config.agents)})")
    values: dict[str, float] = {}
    for fact in facts:
        name, _, number = fact.partition("=")
        try:
            values[name.strip()] = float(number)
        except ValueError:
            return _fail(f"--fact {fact!r}: write NAME=NUMBER, e.g. discount_pct=12")
    from bot.policy import choose

    print(f"{agent} {action}: {choose(config, agent, action, values).explain()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="handrail", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("web", help="serve Slack events, the agents' API and health checks on $PORT")
    sub.add_parser("worker", help="run the escalation and outbox sweeps without the web server")
    sub.add_parser("migrate", help="bring the database schema up to date")
    check = sub.add_parser(
        "config-check", help="validate a config file; with --agent and --action, show which policy a request would get"
    )
    check.add_argument("path", nargs="?", help="default: $HANDRAIL_CONFIG")
    check.add_argument("--agent", help="the agent of the sample request")
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
    args = parser.parse_args(argv)

    settings = Settings()
    try:
        if args.command == "web":
            return web(settings)
        if args.command == "worker":
            return worker(settings)
        if args.command == "migrate":
            from storage.db import make_engine, migrate

            logs.configure()
            migrate(make_engine(settings.database_url))
            return 0
        if args.command == "config-check":
            return config_check(_config(settings, args.path), args.agent, args.action, args.fact)
        if args.command == "webhook-key":
            if args.agent not in _config(settings).agents:
                return _fail(f"no agent {args.agent!r} in the config")
            if settings.handrail_webhook_secret is None:
                return _fail("set HANDRAIL_WEBHOOK_SECRET first")
            print(agent_key(settings.handrail_webhook_secret.get_secret_value(), args.agent))
            return 0
    except ConfigError as error:
        return _fail(str(error))
    return 2


if __name__ == "__main__":
    sys.exit(main())
