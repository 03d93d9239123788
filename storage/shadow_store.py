"""What agents would have written in shadow mode (`shadow_actions`): recorded once per agent and
dedup_key, paired with what a person then did on the same target, and counted for `/agent status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, case, func, select, update
from sqlalchemy.orm import Session

from storage.tables import ShadowAction


@dataclass(frozen=True)
class Agreement:
    """Shadow actions over a period: recorded (would-be writes), compared (a person did the same
    action on the same target since) and matched (every field as the person wrote it)."""

    recorded: int = 0
    compared: int = 0
    matched: int = 0

    @property
    def rate(self) -> float | None:
        """Matched of compared; None when nothing was compared."""
        return self.matched / self.compared if self.compared else None


class ShadowActions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_dedup_key(self, agent: str, dedup_key: str) -> ShadowAction | None:
        return self.session.scalar(
            select(ShadowAction).where(ShadowAction.agent == agent, ShadowAction.dedup_key == dedup_key)
        )

    def add(self, row: ShadowAction) -> None:
        self.session.add(row)
        self.session.flush()

    def waiting(self, agent: str, action: str, target_id: str, since: datetime) -> ShadowAction | None:
        """The newest shadow action of this action on this target since `since` that no person's
        action was compared with yet (read over the (agent, action, target_id, created_at) index)."""
        return self.session.scalar(
            select(ShadowAction)
            .where(
                ShadowAction.agent == agent,
                ShadowAction.action == action,
                ShadowAction.target_id == target_id,
                ShadowAction.created_at >= since,
                ShadowAction.human_at.is_(None),
            )
            .order_by(ShadowAction.created_at.desc(), ShadowAction.id.desc())
            .limit(1)
        )

    def settle(self, row: ShadowAction, **values: Any) -> bool:
        """Record the person's part on `row` unless another report took it first (False then)."""
        done = self.session.execute(
            update(ShadowAction)
            .where(ShadowAction.id == row.id, ShadowAction.human_at.is_(None))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if not cast(CursorResult[Any], done).rowcount:
            return False
        self.session.refresh(row)
        return True

    def agreement(self, agent: str, since: datetime, version: str | None = None) -> Agreement:
        """How the agent's shadow actions since `since` (of one version, if given) compared, in one
        statement over the (agent, created_at) index."""
        query = select(
            func.count(),
            func.count(ShadowAction.human_at),
            func.coalesce(func.sum(case((ShadowAction.matched.is_(True), 1), else_=0)), 0),
        ).where(ShadowAction.agent == agent, ShadowAction.created_at >= since)
        if version is not None:
            query = query.where(ShadowAction.version == version)
        recorded, compared, matched = self.session.execute(query).one()
        return Agreement(recorded=int(recorded), compared=int(compared), matched=int(matched))
