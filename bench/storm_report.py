"""bench/storm.py's figures from what its load processes recorded, and the table it prints."""

from __future__ import annotations

from typing import Any

from bench.loadgen import DROPPED, NOT_SENT, REFUSED, SHED, TIMEOUT
from bench.servers import percentiles

SHED_TARGET_MS = 50.0
SLACK_ACK_S = 3.0  # Slack shows the user an error when a command is not answered within 3 s


def _ms(samples: list[float]) -> dict[str, float]:
    return percentiles([s * 1000 for s in samples], digits=1)


def figures(load: dict[str, Any], gates: dict[str, Any], posted: dict[str, float], rate: float) -> dict[str, Any]:
    """From open_loop's and poll_gates's results and the cards' receipt times (bench/loadgen.py)."""
    records = load["records"]
    codes = [record[2] for record in records]
    accepted = [r for r in records if r[2] in (200, 201)]
    shed = [r for r in records if r[2] in SHED]
    errors = {
        "5xx": sum(1 for c in codes if c >= 500 and c not in SHED),
        "other_status": sum(1 for c in codes if 0 < c < 500 and c not in (200, 201, *SHED)),
        "dropped": codes.count(DROPPED),
        "refused": codes.count(REFUSED),
        "timeouts": codes.count(TIMEOUT),
    }
    to_card = [posted[r[4]] - r[0] for r in accepted if r[4] in posted]
    polls = [poll for replica in gates["polls"] for poll in replica]
    command = gates["command"]
    closed = gates["closed_after_s"]
    late = load["late_s"]
    shed_ms = _ms([r[1] for r in shed])
    return {
        "offered_per_s": rate,
        "generator": {
            "achieved_per_s": round(load["started"] / load["sending_s"], 1),
            "started": load["started"],
            "not_sent_in_flight_cap": codes.count(NOT_SENT),
            "start_late_ms": {k: v for k, v in _ms(late).items() if k in ("p50", "p99", "max")},
            "drain_s": round(load["drained"] - load["sending_ended"], 1),
            "cpu_pct": load["cpu_pct"],
        },
        "approvals": {
            "accepted": len(accepted),
            "shed_503": codes.count(503),
            "shed_429": codes.count(429),
            "errors": errors,
            "accepted_ms": _ms([r[1] for r in accepted]),
            "shed_ms": shed_ms,
            "shed_p99_under_target": shed_ms["p99"] < SHED_TARGET_MS if shed else None,
            "request_to_card_ms": _ms(to_card),
            "accepted_without_card": len(accepted) - len(to_card),
        },
        "gate": {
            "polls": len(polls),
            "ms": _ms([poll[1] for poll in polls]),
            "errors": sum(1 for poll in polls if poll[2] not in (0, 1)),
            "poller_cpu_pct": gates["cpu_pct"],
        },
        "pause": {
            "ack_ms": round(command["seconds"] * 1000, 1) if command else None,
            "ack_status": command["status"] if command else None,
            "ack_text": command["text"] if command else None,
            "within_slack_limit": bool(command and command["status"] == 200 and command["seconds"] < SLACK_ACK_S),
            "gate_closed_after_ms": [None if c is None else round(c * 1000, 1) for c in closed],
            "every_gate_closed_after_ms": None if None in closed else round(max(closed) * 1000, 1),
        },
    }


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.3g} s"


def _pair(p: dict[str, float], *keys: str) -> str:
    if not p.get("n"):
        return "-"
    return " / ".join(duration(p[k]) for k in keys)


def _errors(a: dict[str, Any], not_sent: int) -> str:
    named = {
        "5xx": "× 5xx",
        "other_status": "other 4xx",
        "dropped": "dropped",
        "refused": "refused",
        "timeouts": "timed out",
    }
    parts = [f"{n} {named[k]}" for k, n in a["errors"].items() if n]
    if not_sent:
        parts.append(f"{not_sent} not sent (in-flight cap)")
    return ", ".join(parts) or "0"


def row(s: dict[str, Any]) -> list[str]:
    a, g, p, gen = s["approvals"], s["gate"], s["pause"], s["generator"]
    ack = duration(p["ack_ms"])
    if p["ack_status"] is None:
        ack = "no answer"
    elif p["ack_status"] < 0:
        ack = f"{'refused' if p['ack_status'] == REFUSED else 'dropped'} after {ack}"
    elif p["ack_status"] != 200:
        ack = f"{p['ack_status']} after {ack}"
    elif not p["within_slack_limit"]:
        ack = f"{ack} (late)"
    return [
        "SQLite" if s["database"] == "sqlite" else "PostgreSQL",
        str(s["replicas"]),
        s["code"],
        f"{s['offered_per_s']:g}/s ({gen['achieved_per_s']:g})",
        f"{a['accepted']} / {a['shed_503']} / {a['shed_429']}",
        _errors(a, gen["not_sent_in_flight_cap"]),
        _pair(a["accepted_ms"], "p50", "p99"),
        _pair(a["shed_ms"], "p50", "p99", "max"),
        _pair(g["ms"], "p50", "p99", "max") + (f" ({g['errors']} errors)" if g["errors"] else ""),
        ack,
        duration(p["every_gate_closed_after_ms"]) if p["every_gate_closed_after_ms"] is not None else "not closed",
        _pair(a["request_to_card_ms"], "p50", "p99")
        + (f" ({a['accepted_without_card']} no card)" if a["accepted_without_card"] else ""),
        " / ".join(f"{m:.0f}" for m in s["server_peak_rss_mb"]) + " MB",
    ]


HEAD = [
    "database",
    "replicas",
    "code",
    "offered (achieved)",
    "accepted / 503 / 429",
    "errors",
    "approval p50 / p99",
    "shed p50 / p99 / max",
    "gate p50 / p99 / max",
    "pause ack",
    "gate closed after",
    "card p50 / p99",
    "peak RSS",
]


def table(scenarios: list[dict[str, Any]], timeout_s: float, card_wait_s: float) -> str:
    rows = [HEAD, *(row(s) for s in scenarios)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    legend = [
        "offered (achieved): approvals per second asked for, and started (a lagging generator or the in-flight",
        f"  cap shows here); 503 / 429: shed answers (target: shed p99 under {SHED_TARGET_MS:g} ms); errors: 5xx,",
        f"  dropped connections, no answer in {timeout_s:g} s; pause ack: the signed command's answer (Slack shows",
        f"  an error past {SLACK_ACK_S:g} s: late); gate closed after: from sending it until every replica's gate",
        "  said allowed=false; card: request -> card of accepted approvals (no card: not in Slack",
        f"  {card_wait_s:g} s after the last answer)",
    ]
    return "\n".join([*lines, "", *legend])
