"""Who may run which incident command: the agent's owners, the roles in the config (on-call,
managers, admins), users directly or through user groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from bot.config import AgentConfig, HandrailConfig
from bot.errors import Forbidden, NotFound

Permission = Literal["pause", "pause_all", "rollback", "promote", "mode"]
WHO_MAY = {
    "pause": "owners, on-call, managers",
    "pause_all": "on-call, managers",
    "rollback": "managers, the agent's primary owner",
    "promote": "managers, the agent's primary owner",
    "mode": "managers",
}
Principals = list[tuple[str, tuple[str, ...]]]  # (who, users and user groups)


class NotAllowed(Forbidden):
    """The user may not do this; `who` says who may, in the order a refusal names them."""

    code = "not_allowed"

    def __init__(self, who: Principals) -> None:
        self.who = who
        super().__init__(self.phrase(lambda entry: "@" + entry))

    def phrase(self, principal: Callable[[str], str]) -> str:
        """The refusal, with users and user groups written by `principal`."""
        listed = "; ".join(f"{label} ({', '.join(principal(i) for i in ids)})" for label, ids in self.who)
        return f"You cannot do this. Who can: {listed or 'nobody is configured under `roles:`'}."


def known_agent(config: HandrailConfig, agent_id: str) -> AgentConfig:
    agent = config.agents.get(agent_id)
    if agent is None:
        known = ", ".join(f"`{a}`" for a in config.agents)
        raise NotFound(f"There is no agent `{agent_id[:64]}`. Agents: {known}.", code="unknown_agent")
    return agent


def principals(config: HandrailConfig, permission: Permission, agent_id: str | None) -> Principals:
    """Who may, as (description, users and groups), in the order a refusal names them."""
    agent = config.agents.get(agent_id) if agent_id else None
    roles = config.roles
    found: Principals = []
    if agent is not None and permission == "pause":
        owners = tuple(u for u in (agent.owners.primary, agent.owners.backup, agent.owners.escalation_manager) if u)
        found.append((f"the owners of {agent.name}", owners))
    if agent is not None and permission in ("rollback", "promote"):
        found.append((f"the primary owner of {agent.name}", (agent.owners.primary,)))
    if permission in ("pause", "pause_all"):
        found.append(("on-call", roles.oncall))
    found.append(("managers", roles.managers))
    found.append(("admins", roles.admins))
    return [(label, ids) for label, ids in found if ids]


def groups_in(found: Principals) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for _, ids in found for i in ids if i.startswith("S")))


def check_allowed(
    config: HandrailConfig, permission: Permission, agent_id: str | None, user_id: str, user_groups: frozenset[str]
) -> None:
    """Raise NotAllowed, naming who may, unless the user (or one of their groups) is among them."""
    found = principals(config, permission, agent_id)
    if not any(user_id in ids or user_groups & set(ids) for _, ids in found):
        raise NotAllowed(found)
