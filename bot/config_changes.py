"""The config lane of the audit trail: at start, a process compares its config file with the one
the deployment last ran with (`config_state`, one row) and, when it differs, records one
`config.changed` event: who deployed it (HANDRAIL_DEPLOYED_BY), the file's SHA-256 and a
field-level diff of the loaded config, secrets masked.

Replicas starting together with the same new file record one event: the row changes by
compare-and-set on the SHA-256 it held (the first row by an insert that does nothing on a
conflict), and only the process whose write went through records the event."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel
from sqlalchemy.orm import Session

from bot.config import HandrailConfig, format_duration
from storage.repositories import Audit, ConfigStates

MASK = "***"
# Keys whose values are secrets (or the hashes of secrets): shown as MASK, in the snapshot and diffs.
_SECRET_KEY = re.compile(r"(token|secret|password|routing_key|api_key|private)", re.IGNORECASE)
FINGERPRINTS = "_fingerprints"  # the snapshot's key for what tells a changed secret from an unchanged one
MAX_DIFF = 500  # entries kept in one event; the rest are counted
SHORT = 12  # hex digits of the SHA-256 in the event's object id and in `/agent status`


@dataclass(frozen=True)
class ConfigChange:
    """When the config last changed, to what and by whom (`/agent status`)."""

    sha256: str
    changed_at: datetime
    deployed_by: str | None

    @property
    def short(self) -> str:
        return self.sha256[:SHORT]


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fingerprint(path: str, value: str) -> str:
    """Tells whether a masked value changed without showing it (a hash of a hash or of a
    random key: nothing to recover from 16 hex digits)."""
    return hashlib.sha256(f"handrail-config\0{path}\0{value}".encode()).hexdigest()[:16]


def _masked_url(text: str) -> str:
    """A URL without what may carry a credential: its password and its query."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{netloc.rpartition('@')[2]}"
    query = MASK if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _plain(value: Any, path: str, fingerprints: dict[str, str]) -> Any:
    """A config value as JSON the way the config writes it (durations as `15m`), secrets masked."""
    if isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)) and item is not None and not isinstance(item, bool | dict | list | tuple):
                fingerprints[sub] = _fingerprint(sub, str(item))
                out[str(key)] = MASK
            else:
                out[str(key)] = _plain(item, sub, fingerprints)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}.{i}", fingerprints) for i, item in enumerate(value)]
    if isinstance(value, timedelta):
        return format_duration(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)  # strings, and URLs (pydantic's Url types)
    if re.match(r"^https?://", text, re.IGNORECASE):
        masked = _masked_url(text)
        if masked != text:
            fingerprints[path] = _fingerprint(path, text)
        return masked
    return text


def snapshot(config: HandrailConfig) -> dict[str, Any]:
    """The loaded config (agents, roles, limits, policies, alert rules, PagerDuty, the digest, the
    admin token) as JSON, every secret masked, with the fingerprints of what was masked."""
    fingerprints: dict[str, str] = {}
    plain = _plain(config, "", fingerprints)
    assert isinstance(plain, dict)
    plain[FINGERPRINTS] = fingerprints
    return plain


def _walk(before: Any, after: Any, path: str) -> Iterator[dict[str, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*after, *(k for k in before if k not in after)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in before:
                yield {"path": sub, "before": None, "after": after[key]}
            elif key not in after:
                yield {"path": sub, "before": before[key], "after": None}
            else:
                yield from _walk(before[key], after[key], sub)
    elif isinstance(before, list) and isinstance(after, list):
        for i in range(max(len(before), len(after))):
            sub = f"{path}.{i}"
            if i >= len(before):
                yield {"path": sub, "before": None, "after": after[i]}
            elif i >= len(after):
                yield {"path": sub, "before": before[i], "after": None}
            else:
                yield from _walk(before[i], after[i], sub)
    elif before != after or type(before) is not type(after):
        yield {"path": path, "before": before, "after": after}


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Every field that differs between two snapshots, as {path, before, after} with dotted paths
    (`agents.lead-router.policies.0.quorum`); a field added or removed has null on the other
    side. A masked secret that changed is listed with MASK on both sides."""
    old, new = dict(before), dict(after)
    old_prints, new_prints = old.pop(FINGERPRINTS, {}), new.pop(FINGERPRINTS, {})
    found = list(_walk(old, new, ""))
    listed = {entry["path"] for entry in found}
    for path, print_ in new_prints.items():
        if path in old_prints and old_prints[path] != print_ and path not in listed:
            found.append({"path": path, "before": _at(old, path), "after": _at(new, path)})
    return found


def _at(snapshot: Any, path: str) -> Any:
    """The (masked) value at a dotted path of a snapshot."""
    for part in path.split("."):
        snapshot = snapshot[int(part)] if isinstance(snapshot, list) else snapshot.get(part, MASK)
    return snapshot


def last_change(session: Session) -> ConfigChange | None:
    row = ConfigStates(session).get()
    return ConfigChange(row.sha256, row.changed_at, row.deployed_by) if row else None


def note_start(
    session: Session, *, data: bytes, config: HandrailConfig, deployed_by: str | None, now: datetime
) -> ConfigChange | None:
    """Record the config a process starts with. Returns the change this process recorded (with
    its one `config.changed` event), or None: the same config as last time, or another process
    recorded this change first."""
    sha256 = file_sha256(data)
    states = ConfigStates(session)
    current = snapshot(config)
    for _ in range(3):  # a lost race with a different config: read the winner's row and try again
        row = states.get()
        if row is not None and row.sha256 == sha256:
            return None
        written = (
            states.insert_first(sha256=sha256, snapshot=current, at=now, by=deployed_by)
            if row is None
            else states.replace(expected=row.sha256, sha256=sha256, snapshot=current, at=now, by=deployed_by)
        )
        if not written:
            continue
        changes = diff(row.snapshot if row else {}, current)
        after: dict[str, Any] = {
            "sha256": sha256,
            "previous_sha256": row.sha256 if row else None,
            "diff": changes[:MAX_DIFF],
        }
        if len(changes) > MAX_DIFF:
            after["diff_left_out"] = len(changes) - MAX_DIFF
        Audit(session).record(
            at=now,
            actor=f"deploy:{deployed_by}" if deployed_by else "system",
            event="config.changed",
            object_type="config",
            object_id=sha256[:SHORT],
            before={"sha256": row.sha256, "changed_at": row.changed_at.isoformat()} if row else None,
            after=after,
        )
        return ConfigChange(sha256, now, deployed_by)
    return None
