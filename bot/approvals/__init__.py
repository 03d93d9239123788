"""Approval requests, one module per step of their life: asked for (create), decided by people
(decide), escalated and expired by the sweep (ladder), withdrawn or claimed by the agent (agent),
and what every change leaves behind (records).

Plain functions over a Session; the caller owns the transaction and passes `now`. Each state change
writes its audit event and its outbox messages (card re-render, thread note, DMs, agent callback)
in the same transaction, and marks the approval changed so long-polls wake after commit. Every
change is a compare-and-set on the row's state_version, so racing clicks, sweeps on several
replicas and a stale sweep after a restart change a request at most once.
"""
