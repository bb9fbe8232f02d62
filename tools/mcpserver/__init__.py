"""An MCP server for assistants: read-only tools over the control REST API (``python -m tools.mcpserver``).

``tools.mcpserver.api`` holds the tools (plain async functions over httpx, no MCP import); ``server`` wires them
into the official ``mcp`` package's server, the only module that imports it.
"""
