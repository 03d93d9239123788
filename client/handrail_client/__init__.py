"""Ask Handrail before an AI agent acts.

from handrail_client import Handrail
hr = Handrail("https://handrail.example", token, agent="lead-router")

@hr.require_approval("opportunity.update_stage", summary=lambda opp, stage: f"Move {opp} to {stage}")
def update_stage(opp: str, stage: str) -> None: ...
"""

from handrail_client.client import AsyncHandrail, Handrail
from handrail_client.errors import (
    Cancelled,
    CapReached,
    Denied,
    Expired,
    HandrailError,
    InvalidSignature,
    ParamsMismatch,
    Paused,
    ShadowMode,
    StillPending,
    Unreachable,
)
from handrail_client.models import (
    ActionRecord,
    Approval,
    Gate,
    Release,
    RunsReceived,
    ShadowOutcome,
    Suggestion,
    Version,
)
from handrail_client.signing import verify_callback

__all__ = [
    "ActionRecord",
    "Approval",
    "AsyncHandrail",
    "Cancelled",
    "CapReached",
    "Denied",
    "Expired",
    "Gate",
    "Handrail",
    "HandrailError",
    "InvalidSignature",
    "ParamsMismatch",
    "Paused",
    "Release",
    "RunsReceived",
    "ShadowMode",
    "ShadowOutcome",
    "StillPending",
    "Suggestion",
    "Unreachable",
    "Version",
    "verify_callback",
]
