"""Approval policy as code: which policy governs a request, frozen onto it when it is created.

Policies are tried in order, the agent's own (`agents.<id>.policies`) before the global ones
(`policies`); the first whose glob matches the action and whose conditions all hold wins. A
condition that cannot be evaluated (a fact the request does not carry, a value or a limit that is
not a finite number) fails closed: the request goes to people under the default policy (never to
`auto`), and the snapshot says which condition could not be decided.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Mapping
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import TypeGuard

from pydantic import BaseModel, ConfigDict

from bot.config import (
    DEFAULT_EXECUTE_WINDOW,
    DEFAULT_LADDER,
    AgentConfig,
    Condition,
    HandrailConfig,
    Mode,
    Policy,
    Role,
)

DEFAULT_POLICY = Policy(match="*", mode="approve")


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    after_s: float
    notify: Role


class AppliedPolicy(BaseModel):
    """The policy a request was created under, stored with it (later config changes leave it)."""

    model_config = ConfigDict(frozen=True)

    source: str  # "agents.lead-router.policies.0", "policies.2" or "default"
    match: str
    mode: Mode
    approvers: tuple[str, ...]
    quorum: int
    timeout_s: float
    escalation: tuple[Step, ...]
    execute_window_s: float
    sample: float = 0.0
    note: str | None = None  # e.g. why the default applied
    ack_timeout_s: float | None = None  # how long "I'm on it" holds the ladder; None: the next step's interval
    editable: tuple[str, ...] = ()  # params reviewers may edit, where a request has them
    suggest: bool = False  # an auto policy that asks people because the agent was in suggest mode

    @property
    def timeout(self) -> timedelta:
        return timedelta(seconds=self.timeout_s)

    @property
    def execute_window(self) -> timedelta:
        return timedelta(seconds=self.execute_window_s)

    def describe(self) -> str:
        if self.mode == "auto":
            return f"`{self.source}` ({self.match}: auto" + (f", {self.sample:.0%} sampled)" if self.sample else ")")
        if self.mode == "human_only":
            return f"`{self.source}` ({self.match}: human only)"
        approvals = f"{self.quorum} approval{'s' if self.quorum > 1 else ''}"
        if self.suggest:
            return f"`{self.source}` ({self.match}: auto, {approvals} in suggest mode)"
        return f"`{self.source}` ({self.match}: {approvals})"

    def explain(self) -> str:
        """Every setting on one line, for `handrail config-check --action`."""
        text = f"{self.source} (match {self.match!r}) -> {self.mode}"
        if self.mode == "auto":
            text += f"; {self.sample:.0%} posted for review" if self.sample else ""
        elif self.mode == "approve":
            ladder = ", ".join(f"{_span(s.after_s)} {s.notify}" for s in self.escalation) or "none"
            text += (
                f"; approvers {' '.join(self.approvers)}; quorum {self.quorum}; timeout {_span(self.timeout_s)}"
                f"; ladder {ladder}; execute within {_span(self.execute_window_s)}"
            )
            text += f"; reviewers may edit {', '.join(self.editable)}" if self.editable else ""
            if self.ack_timeout_s is not None:
                text += f"; I'm on it holds the ladder {_span(self.ack_timeout_s)}"
        return text + (f"\n  note: {self.note}" if self.note else "")


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _applied(source: str, policy: Policy, agent: AgentConfig, note: str | None = None) -> AppliedPolicy:
    """A policy with every blank filled in from the agent and the defaults."""
    timeout = policy.timeout or agent.approval_timeout
    ladder = policy.escalation
    if ladder is None:  # the default ladder, without owners the agent lacks or steps past its timeout
        ladder = tuple(s for s in DEFAULT_LADDER if getattr(agent.owners, s.notify) and s.after < timeout)
    return AppliedPolicy(
        source=source,
        match=policy.match,
        mode=policy.mode,
        approvers=policy.approvers or agent.approvers,
        quorum=policy.quorum or 1,
        timeout_s=timeout.total_seconds(),
        escalation=tuple(Step(after_s=s.after.total_seconds(), notify=s.notify) for s in ladder),
        execute_window_s=(policy.execute_window or DEFAULT_EXECUTE_WINDOW).total_seconds(),
        sample=policy.sample or 0.0,
        note=note,
        ack_timeout_s=policy.ack_timeout.total_seconds() if policy.ack_timeout else None,
        editable=policy.editable or (),
    )


_TESTS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "eq": operator.eq,
}


def _finite(value: object) -> TypeGuard[float]:
    """A number a condition can compare: an int or a float that is neither NaN nor infinite
    (booleans, strings, None and everything else are not)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _evaluate(condition: Condition, facts: Mapping[str, object]) -> bool | str:
    """Whether the condition holds on these facts, or why it cannot be evaluated."""
    if condition.fact not in facts:
        return f"needs the fact {condition.fact}, which the request did not give"
    value = facts[condition.fact]
    if not _finite(value):
        return f"tests the fact {condition.fact}, whose value {value!r} is not a finite number"
    given = [(name, getattr(condition, name)) for name in _TESTS if getattr(condition, name) is not None]
    if len(given) != 1:
        return f"has a condition on {condition.fact} with {len(given)} comparisons instead of one"
    name, limit = given[0]
    if not _finite(limit):
        return f"compares the fact {condition.fact} with {limit!r}, which is not a finite number"
    return _TESTS[name](value, limit)


def choose(config: HandrailConfig, agent_id: str, action: str, facts: Mapping[str, object]) -> AppliedPolicy:
    """The policy that governs a request. It fails closed: a matching policy with a condition that
    cannot be evaluated sends the request to people under the default policy."""
    agent = config.agents[agent_id]
    candidates = [(f"agents.{agent_id}.policies.{i}", p) for i, p in enumerate(agent.policies)]
    candidates += [(f"policies.{i}", p) for i, p in enumerate(config.policies)]
    for source, policy in candidates:
        if not fnmatchcase(action, policy.match):
            continue
        verdicts = [_evaluate(condition, facts) for condition in policy.when]
        problem = next((verdict for verdict in verdicts if isinstance(verdict, str)), None)
        if problem is not None:
            return _applied("default", DEFAULT_POLICY, agent, f"{source} {problem}")
        if all(verdicts):
            return _applied(source, policy, agent)
    return _applied("default", DEFAULT_POLICY, agent)


def supervised(applied: AppliedPolicy) -> AppliedPolicy:
    """An auto policy as suggest mode applies it: people see every write, so it asks them as an
    approve policy that sets nothing of its own does (the agent's approvers, quorum 1, its timeout,
    the default ladder and the policy's execute window, which `choose` already filled in), and
    nothing is sampled. Approve and human_only policies are returned as they are."""
    if applied.mode != "auto":
        return applied
    return applied.model_copy(update={"mode": "approve", "sample": 0.0, "suggest": True})


def sampled(approval_id: str, rate: float) -> bool:
    """Whether an auto-approved request is posted for review: a fixed fraction of ids, so the
    choice can be recomputed from the id alone: the first 8 bytes of the id's SHA-256, read as a
    big-endian fraction of 2**64, below the rate."""
    draw = int.from_bytes(hashlib.sha256(approval_id.encode()).digest()[:8], "big") / 2**64
    return draw < rate
