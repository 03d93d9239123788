"""Typed domain errors. The API turns them into `{"error": {"code", "message"}}` with their status;
the Slack side turns them into an ephemeral message to the person who clicked."""

from __future__ import annotations


class HandrailError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class Unauthenticated(HandrailError):
    status = 401
    code = "unauthenticated"


class Forbidden(HandrailError):
    status = 403
    code = "forbidden"


class NotFound(HandrailError):
    status = 404
    code = "not_found"


class Invalid(HandrailError):
    """A request field the API checks itself (FastAPI checks the rest, with the same answer)."""

    status = 422
    code = "invalid_request"


class Conflict(HandrailError):
    status = 409
    code = "conflict"


class TooMany(HandrailError):
    """Past a volume cap. `retry_after` (seconds) is when the cap lifts, if it lifts by itself."""

    status = 429
    code = "volume_cap"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
