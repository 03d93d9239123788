"""Alert messages: one per episode and destination, re-rendered from the episode's state, with
Pause agent, Mute 1h and Acknowledge while it fires; and the notes in its thread."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

PAUSE_ACTION = "alert_pause"
MUTE_ACTION = "alert_mute"
ACK_ACTION = "alert_ack"


class AlertButton(BaseModel):
    """The `value` of every button on an alert message, written by the card and read by its
    handler (which re-checks who may)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    episode_id: str
