"""A small CRM MCP server (stdio) to put behind `handrail mcp-proxy`; examples/mcp_proxy.py runs
both. Alone, it is any MCP server a host would launch: `python examples/mcp_upstream.py`."""

import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("crm", version="1.0", instructions="Notes and records of the CRM.")


@server.tool(annotations=ToolAnnotations(destructive_hint=False))
def add_note(account: str, text: str) -> str:
    """Add a note to an account."""
    print(f"crm: note on {account}: {text}", file=sys.stderr)  # the CRM write goes here (stdout is MCP's)
    return f"noted on {account}"


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def delete_record(id: str) -> str:
    """Delete a CRM record for good."""
    print(f"crm: deleted {id}", file=sys.stderr)
    return f"record {id} deleted"


if __name__ == "__main__":
    server.run("stdio")
