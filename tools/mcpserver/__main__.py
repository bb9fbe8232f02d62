"""``python -m tools.mcpserver``: the MCP server on stdio (an assistant starts it as a subprocess).

Settings in ``tools.mcpserver.api`` (``TT_MCP_CONTROL_URL``, ``TT_MCP_CONTROL_TOKEN``). Logs go to stderr as
JSON lines: stdout carries the protocol.
"""

from __future__ import annotations

import sys

from common.config import ConfigError
from common.logs import setup_logging
from tools.mcpserver.api import ControlTools, McpSettings


def main() -> int:
    """Serve until the assistant closes stdin; 2 on invalid settings or without the mcp package."""
    setup_logging("mcp", stream=sys.stderr)
    try:
        settings = McpSettings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        from tools.mcpserver.server import build_server
    except ImportError as exc:
        print(f"error: the MCP server needs the mcp package ({exc})", file=sys.stderr)
        return 2
    tools = ControlTools.connect(settings)
    build_server(tools).run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
