"""The MCP server's read-only tools against the real control API (Envoy, control, PostgreSQL, Redis), and its
wiring into the ``mcp`` package (skipped when ``mcp`` is not installed)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.config import ConfigError, Secret
from common.embedded import free_port
from tests.edge.conftest import EdgeStack
from tests.edge.test_positions_routes import ASSETS, wallet_lives
from tests.edge.test_routes import address, sub_body
from tests.helpers import eventually_sync
from tools.mcpserver.api import USER_AGENT, ControlApiError, ControlTools, McpSettings, ToolInputError

pytestmark = pytest.mark.integration


@pytest.fixture
async def tools(edge: EdgeStack) -> AsyncIterator[ControlTools]:
    """Tools holding the second of the edge's tokens (an assistant's own token in the rotation list)."""
    t = ControlTools.connect(McpSettings(control_url=edge.url, token=Secret(edge.tokens[1])))
    yield t
    await t.aclose()


def _follower_with_everything(edge: EdgeStack) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A follower wallet with a subscription, three position lives and an armed trigger (made through REST)."""
    follower = address()
    lives = wallet_lives(edge.db_url, follower)
    with edge.client() as c:
        sub = c.post("/subscriptions", json=sub_body(follower=follower)).json()
        trigger = c.post("/triggers", json={"wallet": follower, "followerWalletId": lives["open"]["follower_wallet_id"],
                                            "assetId": ASSETS[0], "kind": "TRIGGER_KIND_STOP_LOSS",
                                            "triggerPrice": "0.01", "size": "1"})
        assert trigger.status_code == 200, trigger.text
    return follower, sub, lives, trigger.json()


async def test_an_assistant_reads_what_the_backend_would(edge: EdgeStack, tools: ControlTools) -> None:
    follower, sub, lives, trigger = _follower_with_everything(edge)
    listed = await tools.list_subscriptions(follower.upper().replace("0X", "0x"), state="active")
    assert [s["id"] for s in listed["subscriptions"]] == [sub["id"]]
    assert (await tools.get_subscription(sub["id"])) == sub
    assert (await tools.list_subscriptions(follower, leader_proxy=address()))["subscriptions"] == []
    assert (await tools.list_fills(sub["id"]))["fills"] == []
    assert (await tools.list_subscription_positions(sub["id"]))["positions"] == []

    open_only = await tools.list_positions(follower, state="OPEN")
    assert [p["id"] for p in open_only["positions"]] == [lives["open"]["id"]]
    first = await tools.list_positions(follower, page_size=2)
    rest = await tools.list_positions(follower, page_size=2, page_token=first["nextPageToken"])
    assert [p["id"] for p in first["positions"] + rest["positions"]] == \
        [lives[k]["id"] for k in ("open", "won", "closed")] and rest["nextPageToken"] == ""

    armed = await tools.list_triggers(follower, state="TRIGGER_STATE_ARMED")
    assert [t["id"] for t in armed["triggers"]] == [trigger["id"]]
    assert (await tools.get_trigger(trigger["id"])) == trigger
    status = await tools.pipeline_status()
    assert status["serving"] is True and status["ready"] is True
    assert status["checks"]["postgres"] == "ok" and status["checks"]["redis"] == "ok"

    def logged() -> list[dict[str, Any]]:  # Envoy flushes its access log about once a second
        lines = edge.envoy.access_entries()
        mine = [line for line in lines if line.get("user_agent") == USER_AGENT]
        assert len(mine) >= 12
        return mine

    mine = eventually_sync(logged, timeout_s=15, message="the tools' requests in the access log")
    assert {line["method"] for line in mine} == {"GET"}  # read-only, on the wire too


async def test_the_api_answers_errors_as_errors(edge: EdgeStack, tools: ControlTools) -> None:
    with pytest.raises(ControlApiError, match="404") as missing:
        await tools.get_subscription("sub_" + secrets.token_hex(8))
    assert missing.value.status == 404
    intruder = ControlTools.connect(McpSettings(control_url=edge.url, token=Secret(secrets.token_hex(32))))
    try:
        with pytest.raises(ControlApiError) as refused:
            await intruder.list_positions(address())
        assert refused.value.status == 401
    finally:
        await intruder.aclose()


@pytest.mark.parametrize(("call", "field"), [
    (lambda t: t.list_subscriptions("0x12"), "follower_proxy"),
    (lambda t: t.list_subscriptions(address(), leader_proxy="nope"), "leader_proxy"),
    (lambda t: t.list_subscriptions(address(), state="SIDEWAYS"), "state must be one of ACTIVE, PAUSED, STOPPED"),
    (lambda t: t.get_subscription("../subscriptions/funding"), "subscription_id"),
    (lambda t: t.list_fills("sub_1", page_size=0), "page_size"),
    (lambda t: t.list_positions(address(), state="UNSPECIFIED"), "state"),
    (lambda t: t.list_triggers("0x" + "g" * 40), "wallet"),
    (lambda t: t.get_trigger("trg_1%2F"), "trigger_id"),
])
async def test_bad_arguments_name_the_field_and_send_nothing(call: Any, field: str) -> None:
    nowhere = ControlTools(httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}"))  # a request would fail
    try:
        with pytest.raises(ToolInputError, match=field):
            await call(nowhere)
    finally:
        await nowhere.aclose()


@pytest.mark.parametrize(("env", "expected"), [
    ({"CONTROL_API_TOKEN": f"{'a' * 64},{'b' * 64}"}, ("http://127.0.0.1:9110", "a" * 64)),
    ({"CONTROL_API_TOKEN": "a" * 64, "TT_MCP_CONTROL_TOKEN": "c" * 64, "TT_MCP_CONTROL_URL": "https://api.x/"},
     ("https://api.x", "c" * 64)),
])
def test_settings(env: dict[str, str], expected: tuple[str, str], tmp_path: Path) -> None:
    settings = McpSettings.from_env({"TT_RUN_DIR": str(tmp_path), **env})
    assert (settings.control_url, settings.token.value) == expected and expected[1] not in repr(settings)


@pytest.mark.parametrize(("env", "variable"), [
    ({}, "CONTROL_API_TOKEN"),
    ({"CONTROL_API_TOKEN": "short"}, "CONTROL_API_TOKEN"),
    ({"CONTROL_API_TOKEN": "a" * 64, "TT_MCP_CONTROL_TOKEN": "short"}, "TT_MCP_CONTROL_TOKEN"),
    ({"CONTROL_API_TOKEN": "a" * 64, "TT_MCP_CONTROL_URL": "ftp://x"}, "TT_MCP_CONTROL_URL"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=variable):
        McpSettings.from_env({"TT_RUN_DIR": str(tmp_path), **env})


async def test_the_mcp_server_lists_read_only_tools_and_calls_them(edge: EdgeStack, tools: ControlTools) -> None:
    pytest.importorskip("mcp", reason="the mcp package is not installed")
    from mcp.client import Client

    from tools.mcpserver.server import build_server

    async with Client(build_server(tools)) as client:
        listed = (await client.list_tools()).tools
        assert {t.name for t in listed} == {f.__name__ for f in tools.tools()}
        assert all(t.annotations is not None and t.annotations.read_only_hint for t in listed)
        status = await client.call_tool("pipeline_status", {})
        assert not status.is_error and status.structured_content["ready"] is True
        bad = await client.call_tool("list_positions", {"wallet": "0x12"})
        assert bad.is_error and "wallet" in bad.content[0].text
