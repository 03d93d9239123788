"""An OpenAI Agents SDK agent whose tool calls wait for a person in Handrail, against `make run`'s
local mode.

    make run                                        # in one terminal: Handrail on :3000, page at /local
    make client                                     # once: the Python client and its adapters
    .venv/bin/python examples/openai_agents_agent.py

The agent asks to move ACME's opportunity to Closed Won: Approve, Deny (with a reason) or Edit &
approve (the stage) its card on http://localhost:3000/local (#deal-desk) and see what the agent does.
No LLM key is needed: a scripted model (the SDK's agents.testing) stands in for one. HANDRAIL_URL
and HANDRAIL_TOKEN point it elsewhere.
"""

import json
import os
from typing import Any

from agents import Agent, RunConfig, function_tool
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call

from handrail_client import Handrail
from handrail_client.openai_agents import needs_approval, run_with_approvals_sync


@function_tool(needs_approval=needs_approval())
def update_stage(opp: str, stage: str) -> str:
    """Move an opportunity to another stage."""
    print(f"updated {opp}: StageName = {stage}")  # the CRM write goes here
    return f"{opp} is now {stage}"


def next_step(call: ModelCall) -> list[Any]:
    """What a model does with the tool's last output: call again with the arguments a reviewer
    approved (Edit & approve), or report."""
    output = [item["output"] for item in call.input if item.get("type") == "function_call_output"][-1]
    if "Approved arguments: " in output:
        approved, _ = json.JSONDecoder().raw_decode(output.split("Approved arguments: ", 1)[1])
        return [function_call("update_stage", approved, call_id="call-2")]
    return [assistant_message(f"Done. {output}")]


# The scripted model: a real one goes here instead, e.g. Agent(model="gpt-4.1") with OPENAI_API_KEY.
model = ScriptedModel(
    [
        [function_call("update_stage", {"opp": "006ACME", "stage": "Closed Won"}, call_id="call-1")],
        ModelStep.respond(next_step),
        ModelStep.respond(next_step),
    ]
)
agent = Agent(name="lead-router", instructions="Keep the CRM up to date.", model=model, tools=[update_stage])

if __name__ == "__main__":
    url = os.environ.get("HANDRAIL_URL", "http://localhost:3000")
    token = os.environ.get("HANDRAIL_TOKEN", "demo-lead-router-token")  # local mode's public demo token
    with Handrail(url, token, agent="lead-router") as hr:
        print(f"waiting for a decision on {url}/local ...", flush=True)
        result = run_with_approvals_sync(
            hr,
            agent,
            "ACME signed the contract: move their opportunity to Closed Won.",
            action=lambda tool: f"opportunity.{tool}",
            options={
                "update_stage": {
                    "summary": lambda opp, stage: f"Move {opp} to {stage}",
                    "target": lambda opp, stage: {"system": "salesforce", "object": "Opportunity", "id": opp},
                    "editable": ["stage"],
                }
            },
            run_config=RunConfig(tracing_disabled=True),  # keep traces on with a real model
        )
    print(result.final_output)
