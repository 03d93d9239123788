"""A Pydantic AI agent whose CRM write waits for a person, against `make run`'s local mode.

    make run                                  # in one terminal: Handrail on :3000, page at /local
    make client                               # once: the Python client and its adapters
    .venv/bin/python examples/pydantic_ai_agent.py

The agent asks to move an opportunity to Closed Won; Approve, Edit & approve (the stage) or Deny
the card on http://localhost:3000/local (#deal-desk). The model is scripted (no API key needed): it
calls the tool, then repeats what the tool answered, so you see what a real model would be told.
HANDRAIL_URL and HANDRAIL_TOKEN point it elsewhere.
"""

import asyncio
import os

from pydantic_ai import Agent, Tool
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from handrail_client import AsyncHandrail
from handrail_client.pydantic_ai import approvals


def update_stage(opp: str, stage: str) -> str:
    """Move an opportunity to another stage, once the customer signed."""
    print(f"updated {opp}: StageName = {stage}")  # the CRM write goes here
    return f"{opp} is now {stage}"


def scripted_llm(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Stands in for the LLM: first it calls the tool, then it reports what came back."""
    last = messages[-1]
    returned = (
        [part for part in last.parts if isinstance(part, ToolReturnPart)] if isinstance(last, ModelRequest) else []
    )
    if not returned:
        return ModelResponse(parts=[ToolCallPart("update_stage", {"opp": "006ACME", "stage": "Closed Won"})])
    return ModelResponse(parts=[TextPart(f"The tool said: {returned[0].content}")])


async def main() -> None:
    url = os.environ.get("HANDRAIL_URL", "http://localhost:3000")
    token = os.environ.get("HANDRAIL_TOKEN", "demo-lead-router-token")  # local mode's public demo token
    async with AsyncHandrail(url, token, agent="lead-router") as hr:
        agent = Agent(
            FunctionModel(scripted_llm),  # a real model goes here, e.g. "openai:gpt-5"
            tools=[Tool(update_stage, requires_approval=True)],  # Pydantic AI's own approval flag
            capabilities=[
                approvals(
                    hr,
                    action=lambda tool: f"opportunity.{tool}",
                    options={"update_stage": {"editable": ["stage"], "reason": "The signed contract arrived"}},
                )
            ],
        )
        print(f"waiting for a decision on {url}/local ...", flush=True)
        result = await agent.run("ACME signed the contract: update the opportunity.")
        print(result.output)


if __name__ == "__main__":
    asyncio.run(main())
