"""`handrail mcp-proxy` in front of an MCP server, against `make run`'s local mode. This script plays
the MCP host (Claude Desktop, an IDE, an agent): it starts the proxy, which starts
examples/mcp_upstream.py, and calls two of its tools as a model would.

    make run                                     # in one terminal: Handrail on :3000, page at /local
    make client                                  # once: the Python client and its adapters
    .venv/bin/python examples/mcp_proxy.py

`add_note` passes straight through (only `delete_*` tools are gated here); `delete_record` waits for
a person: Approve or Deny (with a reason) its card, `mcp.crm.delete_record`, on
http://localhost:3000/local (#deal-desk). No LLM key is needed. HANDRAIL_URL and HANDRAIL_TOKEN point
it elsewhere. A real host launches the same command; in Claude Desktop's claude_desktop_config.json:

    "crm": {"command": "handrail",
            "args": ["mcp-proxy", "--upstream", "python /path/to/mcp_upstream.py", "--gate", "delete_*"],
            "env": {"HANDRAIL_URL": "http://localhost:3000", "HANDRAIL_TOKEN": "demo-lead-router-token",
                    "HANDRAIL_AGENT": "lead-router"}}
"""

import asyncio
import os
import shlex
import sys
from pathlib import Path

from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

URL = os.environ.get("HANDRAIL_URL", "http://localhost:3000")
UPSTREAM = shlex.join([sys.executable, str(Path(__file__).with_name("mcp_upstream.py"))])
PROXY = StdioServerParameters(
    command=sys.executable,  # the same as `handrail mcp-proxy ...`
    args=["-m", "handrail_client.mcp_proxy", "--upstream", UPSTREAM, "--gate", "delete_*"],
    env={
        "HANDRAIL_URL": URL,
        "HANDRAIL_TOKEN": os.environ.get("HANDRAIL_TOKEN", "demo-lead-router-token"),  # local mode's demo token
        "HANDRAIL_AGENT": "lead-router",
    },
)


def said(result: CallToolResult) -> str:
    text = " ".join(part.text for part in result.content if isinstance(part, TextContent))
    return f"refused: {text}" if result.is_error else text


async def main() -> int:
    async with Client(PROXY) as host:  # the model would choose the calls; here they are scripted
        print("tools:", ", ".join(tool.name for tool in (await host.list_tools()).tools))
        noted = await host.call_tool("add_note", {"account": "ACME", "text": "Asked to close the account"})
        print("add_note:", said(noted))
        print(f"waiting for a decision on {URL}/local ...", flush=True)
        deleted = await host.call_tool("delete_record", {"id": "001ACME"})
        print("delete_record:", said(deleted))
    return 1 if deleted.is_error else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
