"""Checking what Handrail signs: callbacks (`approval.*`, `suggestion.feedback`) and control hooks
(rollback, undo). Each carries `X-Handrail-Timestamp` (Unix seconds) and `X-Handrail-Signature`
(`v1=` + hex HMAC-SHA256 of `"<timestamp>." + raw body`, keyed with the agent's webhook key)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from handrail_client.errors import InvalidSignature

TOLERANCE = 300  # seconds between the timestamp and now, either way


def signature(key: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_callback(
    key: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None, tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """The JSON object of a request Handrail signed; InvalidSignature if the signature is missing
    or wrong, the timestamp is more than `tolerance` seconds away, or the body is not an object."""
    lower = {name.lower(): value for name, value in headers.items()}
    timestamp, sent = lower.get("x-handrail-timestamp"), lower.get("x-handrail-signature")
    if not timestamp or not sent:
        raise InvalidSignature("no X-Handrail-Timestamp or X-Handrail-Signature header", code="unsigned")
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        raise InvalidSignature("X-Handrail-Timestamp is not a number of seconds", code="bad_timestamp") from None
    if not hmac.compare_digest(signature(key, timestamp, body), sent):
        raise InvalidSignature("the signature does not match the body and timestamp", code="bad_signature")
    if age > tolerance:
        raise InvalidSignature(f"signed {age:.0f} s away from now (more than {tolerance:.0f})", code="stale")
    try:
        event = json.loads(body)
    except ValueError:
        raise InvalidSignature("the signed body is not JSON", code="not_json") from None
    if not isinstance(event, dict):
        raise InvalidSignature("the signed body is not a JSON object", code="not_json")
    return event
