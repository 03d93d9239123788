"""A tool gated in one line with the client's decorator, against `make run`'s local mode.

    make run                                  # in one terminal: Handrail on :3000, page at /local
    make client                               # once: the Python client and its adapters
    .venv/bin/python examples/decorator_agent.py

The agent asks to move an opportunity to Closed Won; approve or deny the card on
http://localhost:3000/local (#deal-desk). HANDRAIL_URL and HANDRAIL_TOKEN point it elsewhere.
"""

import os
import sys

from handrail_client import Cancelled, Denied, Expired, Handrail, Paused

hr = Handrail(
    os.environ.get("HANDRAIL_URL", "http://localhost:3000"),
    os.environ.get("HANDRAIL_TOKEN", "demo-lead-router-token"),  # local mode's public demo token
    agent="lead-router",
)


@hr.require_approval(
    "opportunity.update_stage",
    summary=lambda opp, stage: f"Move {opp} to {stage}",
    target=lambda opp, stage: {"system": "salesforce", "object": "Opportunity", "id": opp},
    reason="The customer's signed contract arrived",
)
def update_stage(opp: str, stage: str) -> None:
    print(f"updated {opp}: StageName = {stage}")  # the CRM write goes here


if __name__ == "__main__":
    print(f"waiting for a decision on {hr.url}/local ...", flush=True)
    try:
        update_stage("006ACME", "Closed Won")
    except (Denied, Expired, Cancelled, Paused) as refused:  # what an LLM tool would be told
        print(f"not done: {refused}")
        sys.exit(1)
