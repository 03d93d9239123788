"""A small MCP server over stdio, the upstream of the MCP proxy's tests (tests/test_adapter_mcp.py):
`python tests/mcp_upstream.py LOG`. Each tool call it runs is appended to the file LOG as a JSON
line (`{"tool": ..., "args": ...}`), and so are, at startup, the HANDRAIL_* variables it was given
and its own CRM_API_KEY (`{"started": [...], "crm_key": ...}`), so a test can tell exactly what ran
and what reached it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

LOG = Path(sys.argv[1])
server = MCPServer("CRM notes", version="1.0", instructions="Notes and records of the CRM.")


def ran(tool: str, **args: Any) -> None:
    with LOG.open("a") as log:
        log.write(json.dumps({"tool": tool, "args": args}) + "\n")


@server.tool(annotations=ToolAnnotations(title="Add a note", destructive_hint=False))
def add_note(text: str) -> str:
    """Add a note to the account."""
    ran("add_note", text=text)
    return f"noted: {text}"


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def delete_record(id: int) -> str:
    """Delete a CRM record for good."""
    ran("delete_record", id=id)
    return f"record {id} deleted"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def count_records() -> int:
    """How many records the CRM holds."""
    ran("count_records")
    return 42


if __name__ == "__main__":
    handrail = sorted(name for name in os.environ if name.startswith("HANDRAIL_"))
    with LOG.open("a") as log:
        log.write(json.dumps({"started": handrail, "crm_key": os.environ.get("CRM_API_KEY")}) + "\n")
    server.run("stdio")
