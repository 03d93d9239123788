"""PagerDuty's Events API v2, for `page` episodes: the event (`event`) and its delivery (`send`).

One PagerDuty alert per episode: its dedup_key is the episode id, so `trigger`, `acknowledge` and
`resolve` all reach the same alert. A trigger carries a plain-text summary (the agent, the rule and
its numbers), the agent as source and component, the rule as group, when the episode started, and
the finding as custom details. What agents reported (run ids, error text, action types) is
stripped of control and invisible characters and cut; PagerDuty shows no markup, so nothing is
escaped.

The routing key is a secret: it travels in the body only, and no error text carries it.
Responses (PagerDuty's documented retry logic): 202 accepted; 400 an invalid event, which no retry
mends; 429 throttled and 5xx, retried later; a network error, retried.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal, TypedDict

import httpx

from bot.alerts import findings
from bot.config import HandrailConfig
from bot.mrkdwn import clean
from storage.tables import AlertEpisode

Action = Literal["trigger", "acknowledge", "resolve"]

SUMMARY_MAX = 1024  # PagerDuty's limit on payload.summary
ERROR_MAX = 1000  # an agent's error text in the custom details
TEXT_MAX = 200  # any other text an agent chose (run ids, action types, versions), in the details
SUMMARY_ERROR_MAX = 300  # a failed run's error inside the summary
SUMMARY_ID_MAX = 100  # a run id or an action type inside the summary
FAILURE_TEXT_MAX = 500  # what an error we record says (PagerDuty's own words included)
THROTTLED_WAIT = 30.0  # seconds before retrying a 429 without Retry-After (PagerDuty suggests 30 s)
LONGEST_WAIT = 3600.0  # a Retry-After longer than this is not believed
SEVERITY = {"page": "critical", "warning": "warning"}


class Link(TypedDict):
    href: str
    text: str


class PagerDutyFailed(Exception):
    """An event PagerDuty did not take. `permanent`: it never will (400); else retry, after
    `retry_after` seconds when PagerDuty throttled it."""

    def __init__(self, error: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.permanent = permanent
        self.retry_after = retry_after


def event(
    config: HandrailConfig,
    episode: AlertEpisode,
    action: Action,
    links: list[Link] | None = None,
) -> dict[str, Any]:
    """The Events API v2 body for one action on the episode's PagerDuty alert."""
    assert config.pagerduty is not None, "pagerduty: is not configured"
    body: dict[str, Any] = {
        "routing_key": config.pagerduty.routing_key,
        "event_action": action,
        "dedup_key": episode.id,
    }
    if action != "trigger":
        return body
    finding = findings.read(episode.finding)
    details = _details(episode.finding)
    if episode.version:
        details["agent_version"] = _text(episode.version, TEXT_MAX)
    body["payload"] = {
        "summary": summary(episode.agent, finding, episode.started_at),
        "source": f"handrail/{episode.agent}",
        "severity": SEVERITY.get(episode.severity, "critical"),
        "component": episode.agent,
        "group": episode.rule,
        "timestamp": episode.started_at.isoformat(),
        "custom_details": details,
    }
    if links:
        body["links"] = [{"href": link["href"], "text": link["text"]} for link in links]
    return body


async def send(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    """POST the event; raises PagerDutyFailed when PagerDuty did not take it."""
    secret = str(body.get("routing_key") or "")
    try:
        response = await http.post(url, json=body, headers={"User-Agent": "Handrail"})
    except httpx.HTTPError as error:
        # `from None`: the error's own chain stays out of any traceback logged later.
        raise PagerDutyFailed(_hidden(f"{type(error).__name__}: {error}", secret)) from None
    status = response.status_code
    if response.is_success:
        return
    if status == 400:
        raise PagerDutyFailed(_hidden(f"HTTP 400 invalid event: {_said(response)}", secret), permanent=True)
    if status == 429:
        raise PagerDutyFailed("HTTP 429: throttled by PagerDuty", retry_after=_retry_after(response))
    if response.is_redirect:
        raise PagerDutyFailed(f"HTTP {status}: redirects are not followed")
    raise PagerDutyFailed(f"HTTP {status}")


# --- the summary: plain text, one line ---


def summary(agent: str, finding: findings.Finding, started_at: datetime) -> str:
    """`lead-router: 5 duplicate attempts in 24h (more than 3)`, within PagerDuty's 1024 characters."""
    text = f"{agent}: {_headline(finding, started_at)}"
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _headline(finding: findings.Finding, started_at: datetime) -> str:
    match finding:
        case findings.FailureRateFinding():
            return (
                f"{_count(finding.failures)} of {_count(finding.runs)} runs failed in {_span(finding.window_s)} "
                f"({_pct(finding.rate)}, more than {_pct(finding.threshold)})"
            )
        case findings.DuplicatesFinding():
            return (
                f"{_count(finding.attempts)} duplicate attempts in {_span(finding.window_s)} "
                f"(more than {_count(finding.max)})"
            )
        case findings.CostSpikeFinding():
            return (
                f"cost {_usd(finding.cost_usd)} in {_span(finding.window_s)} against {_usd(finding.before_usd)} "
                f"the {_span(finding.window_s)} before (more than +{_pct(finding.increase)} "
                f"and +{_usd(finding.min_increase_usd)})"
            )
        case findings.SilenceFinding():
            expected = f"expected every {_span(finding.expected_every_s)}"
            if finding.last_finished_at is None:
                return f"no finished run ({expected})"
            quiet = (started_at - finding.last_finished_at).total_seconds()
            return f"no finished run for {_span(quiet)} ({expected})"
        case findings.ErrorCategoryFinding():
            share = finding.count / finding.failures if finding.failures else 0.0
            return (
                f"{_count(finding.count)} of {_count(finding.failures)} failures in {_span(finding.window_s)} "
                f"were {_line(finding.category, SUMMARY_ID_MAX)} ({_pct(share)}, more than {_pct(finding.share)})"
            )
        case findings.ActionSpikeFinding():
            return (
                f"{_count(finding.count)} {_line(finding.action, SUMMARY_ID_MAX)} actions in the last hour "
                f"(median {_number(finding.median)} an hour, more than {_number(finding.factor)}x)"
            )
        case findings.RunFailureFinding(run=run):
            category = f" ({_line(run.category, SUMMARY_ID_MAX)})" if run.category else ""
            error = _line(run.error or "", SUMMARY_ERROR_MAX)
            return f"run {_line(run.run_id, SUMMARY_ID_MAX)} failed{category}" + (f": {error}" if error else "")


def _line(text: str, limit: int) -> str:
    """Someone else's text on one line: cleaned, its whitespace runs made single spaces, cut."""
    return _text(" ".join(clean(text).split()), limit)


def _text(text: str, limit: int) -> str:
    text = clean(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(n: int) -> str:
    return f"{n:,}"


def _number(x: float) -> str:
    if not math.isfinite(x):
        return "?"
    return f"{x:,.0f}" if x == int(x) else f"{x:,.1f}"


def _pct(share: float) -> str:
    if not math.isfinite(share):
        return "?%"
    value = share * 100
    return (f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}") + "%"


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if math.isfinite(amount) else "$?"


def _span(seconds: float) -> str:
    """`24h`, `7d`, `1h 30m`, `45s`: whole hours up to two days, else the two largest units."""
    if not math.isfinite(seconds):
        return "?"
    left = max(0, int(seconds))
    if left and left % 3600 == 0 and left < 2 * 86400:
        return f"{left // 3600}h"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


# --- the custom details: the finding, agents' text cleaned and cut ---


def _details(stored: dict[str, Any]) -> dict[str, Any]:
    cleaned = _cleaned(stored, None)
    assert isinstance(cleaned, dict)
    return cleaned


def _cleaned(value: Any, key: str | None) -> Any:
    if isinstance(value, str):
        return _text(value, ERROR_MAX if key == "error" else TEXT_MAX)
    if isinstance(value, dict):
        return {str(k): _cleaned(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cleaned(v, key) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no infinity
    return value


# --- errors ---


def _hidden(text: str, secret: str) -> str:
    """An error's text without the routing key, cut."""
    if secret:
        text = text.replace(secret, "[routing key]")
    return text if len(text) <= FAILURE_TEXT_MAX else text[: FAILURE_TEXT_MAX - 1] + "…"


def _said(response: httpx.Response) -> str:
    """PagerDuty's reasons for refusing an event (`message` and `errors`), or its body's start."""
    try:
        answer = response.json()
    except ValueError:  # not JSON (UnicodeDecodeError is one too)
        return " ".join(clean(response.text[:200]).split()) or "no reason given"
    if not isinstance(answer, dict):
        return "no reason given"
    reasons = [str(answer.get("message") or "")]
    errors = answer.get("errors")
    if isinstance(errors, list):
        reasons.extend(str(e) for e in errors)
    return " ".join(clean("; ".join(r for r in reasons if r)).split()) or "no reason given"


def _retry_after(response: httpx.Response) -> float:
    try:
        given = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return THROTTLED_WAIT
    return min(given, LONGEST_WAIT) if math.isfinite(given) and given > 0 else THROTTLED_WAIT
