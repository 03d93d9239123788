"""The audit trail read back: pages of events for GET /v1/audit (newest first, by an opaque
cursor), and the export of events in order as JSON lines or CSV, with its check against the
database (`handrail audit export` and `audit verify`).

Events are not hash-chained. Each audited change writes its event in its own transaction, on
whichever replica made it; a chain would make every one of those writes wait for the previous
event's hash, behind one lock across replicas. `audit verify` checks instead that an export is
complete and unaltered: ids strictly increasing, and every event of the range in the database
present in the file with the same content, and none besides."""

from __future__ import annotations

import base64
import binascii
import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import IO, Any

from sqlalchemy.orm import Session

from bot.errors import Invalid
from bot.models import AuditEventOut, AuditPageOut, text_problem
from storage.repositories import Audit
from storage.tables import AuditEvent

DEFAULT_LIMIT = 100
MAX_PROBLEMS_TOLD = 20
MAX_LIMIT = 1000
_CURSOR = re.compile(r"a1\.([1-9][0-9]{0,17})")  # what a cursor decodes to: a version tag, the last id
_USER = re.compile(r"[UW][A-Z0-9]{2,}")
# Bounds of the filters: their columns' lengths.
_LENGTHS = {"target": 200, "agent": 64, "actor": 100, "event": 64}
COLUMNS = (
    "id",
    "at",
    "actor",
    "event",
    "object_type",
    "object_id",
    "agent",
    "target_id",
    "before",
    "after",
    "reason",
    "source",
    "evidence",
)
JSON_COLUMNS = ("before", "after", "source", "evidence")
TEXT_COLUMNS = ("actor", "event", "object_type", "object_id", "agent", "target_id", "reason")
NOT_CHAINED = (
    "events are not hash-chained: each replica writes its events in the transactions of the changes "
    "they record, and a chain would put every one of those writes behind one lock; this check compares "
    "the export with the database instead"
)


def encode_cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"a1.{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor stands for; anything else is a 422 (`bad_cursor`)."""
    problem = Invalid(
        "cursor: not a cursor this API gave out; pass the `next_cursor` of the previous page as it is",
        code="bad_cursor",
    )
    if not 0 < len(cursor) <= 40 or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise problem
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise problem from None
    match = _CURSOR.fullmatch(decoded)
    if match is None:
        raise problem
    return int(match.group(1))


@dataclass(frozen=True)
class AuditQuery:
    """The filters of GET /v1/audit, each checked (length, text, time zones), and the page asked for."""

    target: str | None = None
    agent: str | None = None
    actor: str | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        for name, limit in _LENGTHS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not 0 < len(value) <= limit:
                raise Invalid(f"{name}: between 1 and {limit} characters")
            problem = text_problem(value)
            if problem:
                raise Invalid(f"{name}: {problem}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is None:
                continue
            if value.tzinfo is None:
                raise Invalid(f"{name}: give a time zone, e.g. 2026-11-30T00:00:00Z")
            try:
                object.__setattr__(self, name, value.astimezone(UTC))
            except OverflowError:
                raise Invalid(f"{name}: falls outside the years 1 to 9999 once converted to UTC") from None
        if self.since and self.until and self.since >= self.until:
            raise Invalid(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise Invalid(f"limit: from 1 to {MAX_LIMIT}")

    def filters(self) -> dict[str, Any]:
        """The repository's filters. `actor=U123` also finds `user:U123` (a Slack user as events
        name people)."""
        actors = None
        if self.actor is not None:
            actors = [self.actor]
            if _USER.fullmatch(self.actor):
                actors.append(f"user:{self.actor}")
        return {
            "agent": self.agent,
            "target_id": self.target,
            "actors": actors,
            "event": self.event,
            "since": self.since,
            "until": self.until,
        }


def event_out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut.model_validate({name: getattr(event, name) for name in COLUMNS})


def page(session: Session, *, query: AuditQuery) -> AuditPageOut:
    """One page of events, newest first. The cursor is the last id shown: the next page reads
    below it, so events recorded meanwhile (higher ids) neither repeat nor push anything off, and
    every event there was when paging began is reached once."""
    before_id = decode_cursor(query.cursor) if query.cursor is not None else None
    found = Audit(session).newest(before_id=before_id, limit=query.limit + 1, **query.filters())
    shown = found[: query.limit]
    more = len(found) > query.limit
    return AuditPageOut(
        events=[event_out(event) for event in shown],
        next_cursor=encode_cursor(shown[-1].id) if more else None,
    )


# --- export ----------------------------------------------------------------------------------


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def record_of(row: Any) -> dict[str, Any]:
    """An event as the export writes it (a row of `Audit.stream`, or an AuditEvent)."""
    record = {name: getattr(row, name) for name in COLUMNS}
    record["at"] = iso(record["at"])
    return record


def _json_text(stored: str | None) -> str:
    """A JSON column as stored (the database's text, which json.dumps wrote on one line): written
    as it is, which spares parsing and writing it again; null for SQL NULL."""
    if stored is None:
        return "null"
    if "\n" in stored or "\r" in stored:  # not as json.dumps writes it: written anew, on one line
        return json.dumps(json.loads(stored), ensure_ascii=False)
    return stored


def _string(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def jsonl_line(row: Any) -> str:
    """An event (a row of `Audit.stream(raw_json=True)`) as one JSON object on one line, its keys
    in COLUMNS' order."""
    return (
        f'{{"id":{int(row.id)},"at":"{iso(row.at)}","actor":{_string(row.actor)},"event":{_string(row.event)},'
        f'"object_type":{_string(row.object_type)},"object_id":{_string(row.object_id)},'
        f'"agent":{_string(row.agent)},"target_id":{_string(row.target_id)},"before":{_json_text(row.before)},'
        f'"after":{_json_text(row.after)},"reason":{_string(row.reason)},"source":{_json_text(row.source)},'
        f'"evidence":{_json_text(row.evidence)}}}\n'
    )


# A spreadsheet reads a cell starting with one of these as a formula (=HYPERLINK(...) in an
# agent's reason): such cells, and cells starting with ', get a leading ' that `parse_csv` takes off.
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "'")


def _cell(text: str | None) -> str:
    if text is None:
        return ""
    return "'" + text if text.startswith(_FORMULA) else text


def _json_cell(stored: str | None) -> str | None:
    """A JSON column's cell: none for null (SQL NULL, or JSON null as SQLAlchemy stores None)."""
    return None if stored is None or stored == "null" else _json_text(stored)


def csv_row(row: Any) -> list[str]:
    """An event (a row of `Audit.stream(raw_json=True)`) as CSV cells in COLUMNS' order: empty for
    null, the JSON columns as JSON text."""
    return [
        str(row.id),
        iso(row.at),
        *(_cell(getattr(row, name)) for name in ("actor", "event", "object_type", "object_id", "agent", "target_id")),
        _cell(_json_cell(row.before)),
        _cell(_json_cell(row.after)),
        _cell(row.reason),
        _cell(_json_cell(row.source)),
        _cell(_json_cell(row.evidence)),
    ]


def write(rows: Iterable[Any], out: IO[str], fmt: str) -> Iterator[int]:
    """Write each event (rows of `Audit.stream(raw_json=True)`) to `out` in `fmt` (jsonl, or csv
    with a header row), yielding its id."""
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(csv_row(row))
            yield row.id
        return
    for row in rows:
        out.write(jsonl_line(row))
        yield row.id


class Unreadable(ValueError):
    """A line of an export that is not an event as `write` writes it."""


def parse_jsonl(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise Unreadable(f"line {number} is not JSON: {error.msg}") from None
        if not isinstance(record, dict) or set(record) != set(COLUMNS) or not isinstance(record["id"], int):
            raise Unreadable(f"line {number} is not an event (its keys are not {', '.join(COLUMNS)})")
        yield record


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") else text


def parse_csv(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Events from a CSV export: empty cells are null, the JSON columns parsed back."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    if tuple(header) != COLUMNS:
        raise Unreadable(f"the header is not {','.join(COLUMNS)}")
    for number, cells in enumerate(reader, 2):
        if len(cells) != len(COLUMNS):
            raise Unreadable(f"row {number} has {len(cells)} cells, not {len(COLUMNS)}")
        record: dict[str, Any] = {}
        for name, cell in zip(COLUMNS, cells, strict=True):
            text = _uncell(cell)
            if name == "id":
                if not text.isdigit():
                    raise Unreadable(f"row {number}: id {cell!r} is not a number")
                record[name] = int(text)
            elif name in JSON_COLUMNS:
                try:
                    record[name] = json.loads(text) if text else None
                except json.JSONDecodeError:
                    raise Unreadable(f"row {number}: {name} is not JSON") from None
            else:
                record[name] = text if cell else None
        yield record


# --- verify ----------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What `audit verify` found: how many events the file and the database have in the range,
    the first and last id, and the problems (at most MAX_PROBLEMS_TOLD told, all counted)."""

    in_file: int = 0
    in_database: int = 0
    first_id: int | None = None
    last_id: int | None = None
    problems: int = 0
    told: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems += 1
        if len(self.told) < MAX_PROBLEMS_TOLD:
            self.told.append(text)


def _comparable(record: dict[str, Any], csv_form: bool) -> dict[str, Any]:
    """CSV cannot tell an empty text from null: compare them as one."""
    if not csv_form:
        return record
    return {k: (None if k in TEXT_COLUMNS and v == "" else v) for k, v in record.items()}


def verify(file_records: Iterable[dict[str, Any]], db_rows: Iterable[Any], *, csv_form: bool) -> Verdict:
    """Walk the file and the database's events of the same range in id order, side by side:
    each id in the file once and in order, each event of the database in the file with the same
    content, and nothing in the file the database does not have there. Memory stays flat."""
    verdict = Verdict()
    db_iter = iter(db_rows)
    pending = next(db_iter, None)
    last: int | None = None
    for record in file_records:
        verdict.in_file += 1
        event_id = record["id"]
        if last is not None and event_id <= last:
            verdict.problem(f"event {event_id} comes after event {last} in the file: ids must increase")
            continue
        last = event_id
        verdict.first_id = event_id if verdict.first_id is None else verdict.first_id
        verdict.last_id = event_id
        while pending is not None and pending.id < event_id:
            verdict.in_database += 1
            verdict.problem(f"event {pending.id} is in the database but not in the file")
            pending = next(db_iter, None)
        if pending is None or pending.id > event_id:
            verdict.problem(f"event {event_id} is in the file but not in the database's range")
            continue
        verdict.in_database += 1
        stored = _comparable(record_of(pending), csv_form)
        given = _comparable(record, csv_form)
        changed = [name for name in COLUMNS if stored[name] != given[name]]
        if changed:
            verdict.problem(f"event {event_id} differs from the database in {', '.join(changed)}")
        pending = next(db_iter, None)
    while pending is not None:
        verdict.in_database += 1
        verdict.problem(f"event {pending.id} is in the database but not in the file")
        pending = next(db_iter, None)
    return verdict


# --- the command line's two jobs, each in one transaction ----------------------------------------


@dataclass(frozen=True)
class Exported:
    count: int
    first_id: int | None
    last_id: int | None


def export(
    session: Session,
    *,
    out: IO[str],
    fmt: str,
    agent: str | None,
    since: datetime | None,
    until: datetime | None,
    progress: Callable[[int], None] | None = None,
    every: int = 1000,
) -> Exported:
    """Write the events of the range to `out`, oldest first, from one statement read a batch at
    a time; `progress` hears how many were written every `every` events, and at the end."""
    count, first, last = 0, None, None
    rows = Audit(session).stream(raw_json=True, agent=agent, since=since, until=until)
    for event_id in write(rows, out, fmt):
        first = event_id if first is None else first
        last = event_id
        count += 1
        if progress is not None and count % every == 0:
            progress(every)
    if progress is not None and count % every:
        progress(count % every)
    return Exported(count, first, last)


def count(session: Session, *, agent: str | None, since: datetime | None, until: datetime | None) -> int:
    return Audit(session).count(agent=agent, since=since, until=until)


def check_file(
    session: Session,
    *,
    records: Iterable[dict[str, Any]],
    csv_form: bool,
    agent: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Verdict:
    """`verify` of an export's events against the database's events of the same range."""
    rows = Audit(session).stream(agent=agent, since=since, until=until)
    return verify(records, rows, csv_form=csv_form)
