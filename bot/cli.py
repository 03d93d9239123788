"""`handrail` command line: web (serve everything on $PORT), migrate, config-check, webhook-key."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bot.config import ConfigError, HandrailConfig, Settings, load_config
from bot.webhooks import agent_key


def _fail(message: str) -> int:
    print(f"handrail: {message}", file=sys.stderr)
    return 2


def _config(settings: Settings, path: str | None = None) -> HandrailConfig:
    return load_config(Path(path) if path else settings.handrail_config)


def web(settings: Settings) -> int:
    missing = settings.missing_slack_credentials()
    if missing:
        return _fail(f"set {' and '.join(missing)} (from your Slack app's settings) to start; see README.md")
    config = _config(settings)

    import uvicorn

    from bot.app import create_app
    from bot.services import build_services
    from storage.db import migrate

    services = build_services(settings, config)
    migrate(services.db.engine)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(services), host="0.0.0.0", port=settings.port, log_level="info")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="handrail", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("web", help="serve Slack events, the agents' API and health checks on $PORT")
    sub.add_parser("migrate", help="bring the database schema up to date")
    check = sub.add_parser("config-check", help="validate a config file")
    check.add_argument("path", nargs="?", help="default: $HANDRAIL_CONFIG")
    key = sub.add_parser("webhook-key", help="print the key an agent uses to verify callbacks")
    key.add_argument("agent")
    args = parser.parse_args(argv)

    settings = Settings()
    try:
        if args.command == "web":
            return web(settings)
        if args.command == "migrate":
            from storage.db import make_engine, migrate

            migrate(make_engine(settings.database_url))
            return 0
        if args.command == "config-check":
            config = _config(settings, args.path)
            print(f"ok: {len(config.agents)} agent(s): {', '.join(config.agents)}")
            return 0
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
