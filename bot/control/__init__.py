"""Incident control, one module per concern: the state the gate answers from (state), who may do
what (access), pause and resume (pause), modes, versions and rollback (versions), undo of recorded
actions (undo), status (status), and what each change leaves behind (records)."""
