"""`handrail mcp-proxy`: an MCP server that stands in front of another one (the upstream), offers
its tools unchanged, and asks Handrail before it forwards a call (`pip install
"handrail-client[mcp]"`). Point the MCP host (Claude Desktop, an IDE, an agent) at the proxy
instead of the upstream:

    handrail mcp-proxy --upstream "npx -y @acme/crm-mcp" --agent lead-router

Each gated call is an approval request whose action is `mcp.<server>.<tool>` and whose params are
the call's arguments; the proxy waits for the decision, claims it, records the action, and calls
the upstream with the approved arguments (a reviewer may have edited them). The policies of the
agent in Handrail decide which tools people review: an `auto` policy on `mcp.<server>.<tool>`
approves at once. A denial, an expired or cancelled request, a closed gate (paused, volume cap,
shadow mode) or a Handrail that cannot be asked returns a tool error (`isError`) saying why, and
the upstream is not called.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from fnmatch import fnmatchcase
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams, TextContent

from handrail_client.client import AsyncHandrail
from handrail_client.errors import HandrailError, StillPending, refusal_message

__all__ = ["Proxy", "action_of", "cli", "main"]

HEARTBEAT = 15.0  # seconds between progress notifications while a call waits for people

EXAMPLES = """\
environment:
  HANDRAIL_URL, HANDRAIL_TOKEN, HANDRAIL_AGENT   defaults of --url, --token and --agent
  The upstream command gets the proxy's environment without the HANDRAIL_* variables.

examples:
  # every tool of a local server, as the agent lead-router (local mode: handrail web)
  HANDRAIL_URL=http://localhost:3000 HANDRAIL_TOKEN=demo-lead-router-token \\
    handrail mcp-proxy --upstream "python crm_server.py --readonly=false" --agent lead-router

  # only the tools whose names start with delete_ or send_; the others pass straight through
  handrail mcp-proxy --upstream "npx -y @acme/crm-mcp" --gate "delete_*" --gate "send_*"

  # a Streamable HTTP server, asked as mcp.crm.<tool>; give up waiting after 10 minutes
  handrail mcp-proxy --upstream https://crm.example/mcp --name crm --wait-timeout 600

  # in Claude Desktop's claude_desktop_config.json
  "crm": {"command": "handrail", "args": ["mcp-proxy", "--upstream", "npx -y @acme/crm-mcp"],
          "env": {"HANDRAIL_URL": "...", "HANDRAIL_TOKEN": "...", "HANDRAIL_AGENT": "lead-router"}}
"""


def action_of(server: str, tool: str) -> str:
    """The Handrail action of a call of `tool` on the upstream named `server`."""
    return f"mcp.{server}.{re.sub(r'[^A-Za-z0-9_.:/-]', '_', tool)}"[:200]


def sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:100]


class Proxy:
    """The proxy's two handlers, for an upstream `Client` that is already connected."""

    def __init__(
        self, hr: AsyncHandrail, upstream: Client, server: str, gate: Sequence[str], wait_timeout: float | None
    ) -> None:
        self.hr, self.upstream, self.server, self.gate = hr, upstream, server, list(gate)
        self.wait_timeout = wait_timeout
        self.descriptions: dict[str, str] = {}  # by tool name, for the requests' reason

    def gated(self, tool: str) -> bool:
        return any(fnmatchcase(tool, pattern) for pattern in self.gate)

    def remember(self, page: ListToolsResult) -> None:
        self.descriptions.update({tool.name: (tool.description or "").strip() for tool in page.tools})

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        page = await self.upstream.list_tools(cursor=params.cursor if params else None)
        self.remember(page)
        return ListToolsResult(tools=page.tools, next_cursor=page.next_cursor)

    async def call_tool(self, ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        tool, arguments = params.name, dict(params.arguments or {})
        if self.gated(tool):
            action = action_of(self.server, tool)
            decision = await self.ask(ctx, action, tool, arguments)
            if isinstance(decision, HandrailError):
                log(f"{action}: not called ({type(decision).__name__})")
                return CallToolResult(content=[TextContent(text=refusal(tool, decision))], is_error=True)
            log(f"{action}: approved, calling it")
            arguments = decision
        return await self.upstream.call_tool(tool, arguments)

    async def ask(
        self, ctx: ServerRequestContext[Any], action: str, tool: str, arguments: dict[str, Any]
    ) -> dict[str, Any] | HandrailError:
        """The arguments people approved, or why not (guard withdraws a request still pending after
        the wait timeout); with progress notifications meanwhile, so hosts that time out idle calls
        can keep waiting."""
        waiting = f"waiting for approval of {action} in Handrail"
        await ctx.session.report_progress(0, None, waiting)
        description = self.descriptions.get(tool, "").splitlines()
        reason = f"{tool} on the MCP server {self.server}" + (f": {description[0]}" if description else "")
        target = {"system": "mcp", "object": self.server, "id": tool[:200]}
        decision: dict[str, Any] | HandrailError
        async with anyio.create_task_group() as heartbeat:
            heartbeat.start_soon(beat, ctx, waiting)
            try:
                decision = await self.hr.guard(
                    action, arguments, tool=tool, target=target, reason=reason, wait_timeout=self.wait_timeout
                )
            except HandrailError as refused:  # a task group would wrap it in an ExceptionGroup
                decision = refused
            finally:
                heartbeat.cancel_scope.cancel()
        return decision


async def beat(ctx: ServerRequestContext[Any], message: str) -> None:
    waited = 0.0
    while True:
        await anyio.sleep(HEARTBEAT)
        waited += HEARTBEAT
        await ctx.session.report_progress(waited, None, f"{message} ({waited:.0f} s)")


def refusal(tool: str, error: HandrailError) -> str:
    """What the host (and the model behind it) is told instead of the tool's result."""
    if told := refusal_message(tool, error):  # a decision: denied, expired, cancelled, a closed gate
        return told
    if isinstance(error, StillPending):
        return (
            f"Handrail: nobody decided on {tool} within the wait timeout (the request is withdrawn), so it did not run."
        )
    return f"Handrail: the call could not be put to Handrail, so {tool} did not run: {error}"


def log(message: str) -> None:
    print(f"handrail mcp-proxy: {message}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="handrail mcp-proxy",
        description="Serve, over stdio, the tools of an upstream MCP server, and ask Handrail before each gated\n"
        "call: as the approval action mcp.<server>.<tool>, with the call's arguments as its params.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--upstream",
        required=True,
        help="the command line of an MCP server over stdio (one argument, split as a shell would), "
        "or the http(s) URL of a Streamable HTTP MCP server",
    )
    p.add_argument(
        "--name",
        help="the <server> part of the actions (default: the name the upstream gives, "
        "with characters other than letters, digits, _ and - replaced by _)",
    )
    p.add_argument("--url", default=env("HANDRAIL_URL"), help="Handrail's URL (default: $HANDRAIL_URL)")
    p.add_argument(
        "--token",
        default=env("HANDRAIL_TOKEN"),
        help="the agent's token (default: $HANDRAIL_TOKEN; prefer the variable, as other users of "
        "this machine may see the command line)",
    )
    p.add_argument("--agent", default=env("HANDRAIL_AGENT"), help="the agent's id (default: $HANDRAIL_AGENT)")
    p.add_argument(
        "--gate",
        action="append",
        metavar="PATTERN",
        help="a glob on tool names whose calls go to Handrail; repeat it for several (default: *, every "
        "call: Handrail's policies then decide, and an auto policy approves at once). Other tools pass through.",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a call waits for a decision before it is withdrawn and refused (default: until "
        "it is decided or expires)",
    )
    return p


def main(argv: list[str]) -> int:
    """`handrail mcp-proxy ARGS...`; returns the exit code (2 for bad options)."""
    try:
        options, upstream = parse(argv)
    except SystemExit as done:  # --help (0) or bad options (2), already printed
        return done.code if isinstance(done.code, int) else 2
    try:
        anyio.run(serve, options, upstream)
    except KeyboardInterrupt:
        return 130
    except Upstream as failed:
        log(str(failed))
        return 1
    return 0


def parse(argv: list[str]) -> tuple[argparse.Namespace, str | StdioServerParameters]:
    p = parser()
    options = p.parse_args(argv)
    for name, variable in (("url", "HANDRAIL_URL"), ("token", "HANDRAIL_TOKEN"), ("agent", "HANDRAIL_AGENT")):
        if not getattr(options, name):
            p.error(f"no Handrail {name}: pass --{name} or set {variable}")
    if options.wait_timeout is not None and not options.wait_timeout > 0:
        p.error("--wait-timeout must be a positive number of seconds")
    if options.name is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", options.name):
        p.error("--name takes letters, digits, _ and - only")
    try:
        return options, upstream_of(options.upstream)
    except ValueError as bad:
        p.error(f"--upstream: {bad}")


def cli() -> None:
    sys.exit(main(sys.argv[1:]))


class Upstream(Exception):
    """The upstream could not be started or reached."""


def upstream_of(text: str) -> str | StdioServerParameters:
    if re.match(r"https?://", text):
        return text
    words = shlex.split(text)
    if not words:
        raise ValueError("an empty command")
    env = {name: value for name, value in os.environ.items() if not name.startswith("HANDRAIL_")}
    return StdioServerParameters(command=words[0], args=words[1:], env=env)


async def serve(options: argparse.Namespace, upstream_at: str | StdioServerParameters) -> None:
    async with AsyncExitStack() as stack:
        try:
            upstream = await stack.enter_async_context(Client(upstream_at, cache=None))
            tools = await upstream.list_tools()
        except Exception as failed:  # any failure to start or reach it, with the first reason
            cause: BaseException = failed
            while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
                cause = cause.exceptions[0]
            why = f"{type(cause).__name__}: {cause}"
            raise Upstream(f"cannot start or reach the upstream {options.upstream!r}: {why}") from failed
        info = upstream.server_info
        name = options.name or sanitise(info.name if info else "") or "upstream"
        hr = await stack.enter_async_context(AsyncHandrail(options.url, options.token, agent=options.agent))
        proxy = Proxy(hr, upstream, name, options.gate or ["*"], options.wait_timeout)
        proxy.remember(tools)
        gated = [tool.name for tool in tools.tools if proxy.gated(tool.name)]
        log(f"{len(tools.tools)} tools of {name}; asking {hr.url} as {hr.agent} about {', '.join(gated) or 'none'}")
        server: Server[Any] = Server(
            info.name if info else name,
            version=info.version if info else "",
            instructions=upstream.instructions,
            on_list_tools=proxy.list_tools,
            on_call_tool=proxy.call_tool,
        )
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    cli()
