"""Signed callbacks to agents.

Each POST carries `X-Handrail-Timestamp` (Unix seconds) and
`X-Handrail-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>." + raw body)>`. The key is per agent,
derived from HANDRAIL_WEBHOOK_SECRET (`handrail webhook-key <agent>` prints it). Receivers check
the signature with `verify()` (or the same three lines in any language) and reject timestamps more
than five minutes old. A callback about an approval carries `X-Request-Id`: the id of the request
that created it, as in Handrail's log.

Callbacks follow no redirects: a 3xx answer is a failed delivery, so a callback cannot be bounced
to an address the operator did not allow (bot/destinations.py decides which those are).
"""

from __future__ import annotations

import hashlib
import hmac

import httpx

TIMESTAMP_HEADER = "X-Handrail-Timestamp"
SIGNATURE_HEADER = "X-Handrail-Signature"
REQUEST_ID_HEADER = "X-Request-Id"  # not signed: it says which request's log to read, nothing more
TOLERANCE_SECONDS = 300


def agent_key(secret: str, agent_id: str) -> str:
    return hmac.new(secret.encode(), f"handrail-callback:{agent_id}".encode(), hashlib.sha256).hexdigest()


def sign(key: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(key: str, timestamp: str, body: bytes, signature: str, now: float) -> bool:
    """What an agent runs on each callback it receives."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(key, sent, body), signature)


class CallbackFailed(Exception):
    pass


IDEMPOTENCY_HEADER = "Idempotency-Key"  # the same on every request that asks for the same effect


async def deliver(
    client: httpx.AsyncClient,
    *,
    url: str,
    key: str,
    timestamp: int,
    body: bytes,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> None:
    """POST the signed body; `request_id` (the approval's) goes along as X-Request-Id."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Handrail",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(key, timestamp, body),
    }
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    if idempotency_key is not None:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise CallbackFailed(f"{type(error).__name__}: {error}") from error
    if response.is_redirect:
        raise CallbackFailed(f"HTTP {response.status_code}: redirects are not followed")
    if not response.is_success:
        raise CallbackFailed(f"HTTP {response.status_code}")
