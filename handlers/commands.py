"""The /agent slash command: a table of subcommands, each with usage and help text."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.services import Services


@dataclass(frozen=True)
class Subcommand:
    usage: str
    summary: str
    run: Callable[[Services, list[str], str], Awaitable[str]]


async def _help(services: Services, args: list[str], user_id: str) -> str:
    return help_text()


COMMANDS: dict[str, Subcommand] = {
    "help": Subcommand("/agent help", "this list", _help),
}


def help_text() -> str:
    lines = ["*Handrail* keeps people in charge of what agents do. Commands:"]
    lines += [f"• `{c.usage}`: {c.summary}" for c in COMMANDS.values()]
    lines.append("Approval requests appear as cards in each agent's channel: click *Approve* or *Deny* there.")
    return "\n".join(lines)


async def dispatch(services: Services, text: str, user_id: str) -> str:
    words = text.split()
    if not words:
        return help_text()
    command = COMMANDS.get(words[0].lower())
    if command is None:
        return f"Unknown command `{words[0][:40]}`.\n" + help_text()
    return await command.run(services, words[1:], user_id)


def register(app: AsyncApp, services: Services) -> None:
    @app.command("/agent")
    async def agent_command(ack: AsyncAck, command: dict[str, str]) -> None:
        await ack(text=await dispatch(services, command.get("text", ""), command["user_id"]))
