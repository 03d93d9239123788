"""Delivery of outbox rows: approval cards, thread notes, direct messages, agent callbacks.

Rows are written in the transaction of the change that causes them. The deliverer is kicked right
after that commit (a card appears in milliseconds) and by every sweep (re-sending what failed or was
interrupted). Each row is leased before it is worked on, so replicas never work on one row together;
a card is re-rendered from the approval's current state under a per-approval lease, so it is posted
once and then only updated.

`rows` holds the database side, `deliverer` the sending. A pass costs few transactions: one claims
the due rows (one statement), takes the card leases of their approvals (one statement, which also
reads those approvals) and reads what else their notes need; one records each card shown, with the
rows of its approval delivered until then; one marks the rest of an approval's rows sent together,
once they are all out.
"""

from bot.outbox.deliverer import Deliverer
from bot.outbox.rows import LEASE, MAX_ATTEMPTS, retry_delay

__all__ = ["LEASE", "MAX_ATTEMPTS", "Deliverer", "retry_delay"]
