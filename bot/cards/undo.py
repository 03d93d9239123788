"""The undo preview modal (`/agent undo <agent> N`), its progress and its results."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

from bot import mrkdwn
from bot.cards.blocks import notice_modal, section
from bot.config import AgentConfig
from bot.control.undo import MAX_UNDO, UndoResult
from storage.tables import ActionRecord

UNDO_VIEW = "control.undo"
TITLE = "Undo actions"


class UndoPlan(BaseModel):
    """The undo modal's private_metadata: the previewed reversible actions."""

    agent: str = Field(max_length=64)
    action_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(max_length=MAX_UNDO)
    skipped: int = Field(ge=0, le=MAX_UNDO)

    @classmethod
    def parse(cls, metadata: str) -> UndoPlan | None:
        try:
            return cls.model_validate_json(metadata)
        except ValidationError:
            return None


def _action_line(action: ActionRecord) -> str:
    target = action.target
    name = mrkdwn.code(f"{target['system']} {target['object']} {target['id']}", 400)
    return f"`{action.id}` {mrkdwn.code(action.action, 210)} on {name} · {mrkdwn.date(action.created_at)}"


def _restore_text(action: ActionRecord) -> str:
    parts = [
        f"{mrkdwn.words(c['field'], 100)} → {mrkdwn.words(mrkdwn.value(c.get('before')), 200)}"
        for c in action.changes[:10]
    ]
    more = f" and {len(action.changes) - 10} more" if len(action.changes) > 10 else ""
    return "restores " + ", ".join(parts) + more


def undo_modal(agent_id: str, agent: AgentConfig, actions: list[ActionRecord]) -> dict[str, Any]:
    """The preview: what undoing each of the newest actions would restore; irreversible ones are
    listed as skipped. No submit button when nothing can be undone."""
    reversible = [a for a in actions if a.reversible]
    plan = UndoPlan(agent=agent_id, action_ids=[a.id for a in reversible], skipped=len(actions) - len(reversible))
    name = f"*{mrkdwn.escape(agent.name)}* (`{agent_id}`)"
    head = (
        f"The {len(actions)} newest recorded action(s) of {name} not yet undone. "
        f"Each undo is sent to the agent's control hook."
        if actions
        else f"{name} has no recorded action left to undo."
    )
    blocks: list[dict[str, Any]] = [section(head)]
    for action in actions:
        detail = _restore_text(action) if action.reversible else ":no_entry_sign: irreversible: skipped"
        blocks.append(section(f"{_action_line(action)}\n{detail}"))
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": UNDO_VIEW,
        "private_metadata": plan.model_dump_json(),
        "title": {"type": "plain_text", "text": TITLE},
        "close": {"type": "plain_text", "text": "Cancel" if reversible else "Close"},
        "blocks": blocks,
    }
    if reversible:
        view["submit"] = {"type": "plain_text", "text": f"Undo {len(reversible)}"}
    return view


def undo_progress_modal(count: int) -> dict[str, Any]:
    return notice_modal(TITLE, f":hourglass_flowing_sand: Undoing {count} action(s)…")


def undo_result_modal(results: list[UndoResult], skipped: int) -> dict[str, Any]:
    done = sum(r.ok for r in results)
    lines = [f"*Undid {done} of {len(results)}*" + (f" · {skipped} irreversible skipped" if skipped else "")]
    blocks = [section(lines[0])]
    for result in results:
        mark = ":white_check_mark:" if result.ok else ":x:"
        blocks.append(section(f"{mark} {mrkdwn.code(result.action_id, 80)}: {mrkdwn.words(result.detail, 2000)}"))
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": TITLE},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": blocks,
    }
