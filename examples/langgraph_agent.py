"""A LangGraph graph whose write waits for a person, against `make run`'s local mode.

    make run                                  # in one terminal: Handrail on :3000, page at /local
    make client                               # once: the Python client and its adapters
    .venv/bin/python examples/langgraph_agent.py

The `update_stage` node asks Handrail through a LangGraph interrupt; approve, edit the stage, or
deny the card on http://localhost:3000/local (#deal-desk). HANDRAIL_URL and HANDRAIL_TOKEN point it
elsewhere.
"""

import os
import sys
from typing import TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from handrail_client import Handrail, HandrailError
from handrail_client.langgraph import approval, invoke_with_handrail


class Deal(TypedDict, total=False):
    opp: str
    stage: str
    outcome: str


def plan(state: Deal) -> Deal:
    return {"stage": "Closed Won"}  # a real agent asks its model here (e.g. ChatOpenAI in a node)


def update_stage(state: Deal) -> Deal:
    try:
        params = approval(
            "opportunity.update_stage",
            {"opp": state["opp"], "stage": state["stage"]},
            summary=f"Move {state['opp']} to {state['stage']}",
            target={"system": "salesforce", "object": "Opportunity", "id": state["opp"]},
            reason="The customer's signed contract arrived",
            editable=["stage"],
        )
    except HandrailError as refused:  # Denied (with the reviewer's reason), Expired, Paused, ...
        return {"outcome": f"not done: {refused}"}
    # The node runs again from its start once Handrail has decided: write only after approval().
    print(f"updated {params['opp']}: StageName = {params['stage']}")  # the CRM write goes here
    return {"stage": params["stage"], "outcome": "updated"}


builder = StateGraph(Deal)
builder.add_node("plan", plan)
builder.add_node("update_stage", update_stage)
builder.add_edge(START, "plan")
builder.add_edge("plan", "update_stage")
builder.add_edge("update_stage", END)
graph = builder.compile(checkpointer=InMemorySaver())  # interrupts need a checkpointer

if __name__ == "__main__":
    url = os.environ.get("HANDRAIL_URL", "http://localhost:3000")
    token = os.environ.get("HANDRAIL_TOKEN", "demo-lead-router-token")  # local mode's public demo token
    with Handrail(url, token, agent="lead-router") as hr:
        print(f"waiting for a decision on {url}/local ...", flush=True)
        state = invoke_with_handrail(hr, graph, {"opp": "006ACME"}, {"configurable": {"thread_id": "deal-006ACME"}})
    print(state["outcome"])
    sys.exit(0 if state["outcome"] == "updated" else 1)
