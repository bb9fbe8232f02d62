"""The MCP wiring: the read-only tools of ``tools.mcpserver.api`` served by the official ``mcp`` package.

The only module that imports ``mcp`` (``mcp>=2``: ``MCPServer``); the tools themselves need only httpx.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from tools.mcpserver.api import ControlApiError, ControlTools, ToolInputError

NAME = "tradingtools-control"
INSTRUCTIONS = (
    "Read-only view of the Trading Tools copy-trading engine through its control API: followers' "
    "subscriptions to leader wallets, their fills, positions and take-profit / stop-loss triggers, and "
    "whether the pipeline is up. Wallets are 0x addresses (follower proxy wallets); money, prices and sizes "
    "are decimal strings. Lists are paged: pass nextPageToken back as page_token. Nothing can be changed here."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)


def reported(tool: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``tool`` with its expected failures (bad input, a refusal of the control API) told to the assistant as
    the tool's error text; anything else stays a crash, whose details the client never sees."""
    @functools.wraps(tool)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await tool(*args, **kwargs)
        except (ToolInputError, ControlApiError) as exc:
            raise ToolError(str(exc)) from exc

    return call


def build_server(tools: ControlTools) -> MCPServer:
    """An MCP server exposing every tool of ``tools``, each annotated read-only."""
    server: MCPServer = MCPServer(NAME, instructions=INSTRUCTIONS)
    for tool in tools.tools():
        server.add_tool(reported(tool), annotations=READ_ONLY)
    return server
