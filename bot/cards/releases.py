"""What a release says in Slack: started, promoted, halted, done, each with the canary's numbers
beside the stable version's over the same period; a refused promotion; the status line."""

from __future__ import annotations

from bot import mrkdwn, outbound
from bot.alerts.rules import wilson
from storage.tables import Release

VERSION_MAX = 60


def _who(by: str) -> str:
    kind, _, name = by.partition(":")
    if kind == "user":
        return mrkdwn.user(name)
    if kind == "agent":
        return f"the agent ({mrkdwn.code(name, 64)})"
    return "Handrail"


def _share(count: int, of: int) -> str:
    """`4.0% (1.1–13.5%, 2 of 50)`: a rate with its 95% interval; `–` when nothing was counted."""
    if not of:
        return "–"
    low, high = wilson(count, of)
    return f"{count / of:.1%} ({low:.1%}–{high:.1%}, {count} of {of})"


def _usd(amount: float, runs: int) -> str:
    return f"${amount / runs:,.4f}" if runs else "–"


def comparison_lines(comparison: outbound.Compared) -> list[str]:
    canary, stable = comparison.canary, comparison.stable
    ours = mrkdwn.code(canary.version or "?", VERSION_MAX)
    theirs = mrkdwn.code(stable.version or "?", VERSION_MAX)
    lines = [
        f"Since {mrkdwn.date(comparison.since)}, {ours} (canary) · {theirs} (stable):",
        f"• Runs: {canary.runs} · {stable.runs}",
        f"• Failure rate: {_share(canary.failed, canary.runs)} · {_share(stable.failed, stable.runs)}",
        f"• Cost per run: {_usd(canary.cost_usd, canary.runs)} · {_usd(stable.cost_usd, stable.runs)}",
        f"• Acceptance: {_share(canary.accepted, canary.answered)} · {_share(stable.accepted, stable.answered)}",
        f"• Reversal rate: {_share(canary.undone, canary.actions)} · {_share(stable.undone, stable.actions)}",
    ]
    if not comparison.conclusive:
        lines.append(f"_Not conclusive yet: each version needs {comparison.min_runs} finished runs to compare._")
    elif comparison.worse:
        lines.append(
            "*Worse beyond the margins:* " + ", ".join(name.replace("_", " ") for name in comparison.worse) + "."
        )
    else:
        lines.append("Within the margins on every measure.")
    return lines


def release_text(name: str, note: outbound.ReleaseChanged) -> str:
    """The announcement of a release change (`name`: the agent's name, already escaped)."""
    version = mrkdwn.code(note.version, VERSION_MAX)
    stable = mrkdwn.code(note.stable, VERSION_MAX) if note.stable else "the active version"
    reason = f": {mrkdwn.words(note.reason, 500)}" if note.reason else ""
    match note.event:
        case "started" if note.rollout == 0:
            head = f":ghost: {name} is trying {version} in shadow: it serves nobody; {stable} serves every customer."
        case "started":
            head = (
                f":hatching_chick: {name} started a canary of {version} at {note.rollout}% of customers; "
                f"{stable} serves the rest."
            )
        case "promoted":
            forced = " *despite worse numbers*" if note.forced else ""
            head = (
                f":arrow_up: {_who(note.by)} promoted {name} {version} to {note.rollout}% of customers "
                f"(was {note.before}%){forced}{reason}."
            )
        case "done":
            forced = " *despite worse numbers*" if note.forced else ""
            head = (
                f":white_check_mark: {_who(note.by)} promoted {name} {version} to every customer{forced}{reason}: "
                f"it is the active version now (was {stable})."
            )
        case "halted":
            head = (
                f":octagonal_sign: {name}'s canary {version} was halted by {_who(note.by)} at {note.before}% → "
                f"0%{reason}. {stable} serves every customer."
            )
    lines = [head]
    if note.comparison is not None:
        lines += comparison_lines(note.comparison)
    return "\n".join(lines)


def refused_worse(comparison: outbound.Compared, agent_id: str) -> str:
    """Why a promotion was refused: the numbers, and how to go on anyway."""
    lines = [":no_entry: Not promoted: the canary compares worse than the stable version."]
    lines += comparison_lines(comparison)
    lines.append(f"To promote anyway: {mrkdwn.code(f'/agent promote {agent_id} <percent> force <reason>')}")
    return "\n".join(lines)


def status_line(release: Release) -> str:
    """The release under way (or the last one) in /agent status."""
    version = mrkdwn.code(release.version, VERSION_MAX)
    match release.stage:
        case "shadow":
            return f"• Release: {version} in shadow (serves nobody) since {mrkdwn.date(release.started_at)}"
        case "canary":
            since = mrkdwn.date(release.canary_since or release.started_at)
            return f"• Release: canary {version} at {release.rollout}% of customers since {since}"
        case "halted":
            why = f": {mrkdwn.words(release.halted_reason, 300)}" if release.halted_reason else ""
            return f"• Release: {version} halted {mrkdwn.date(release.updated_at)}{why}"
        case _:
            return f"• Release: {version} reached every customer {mrkdwn.date(release.updated_at)}"
