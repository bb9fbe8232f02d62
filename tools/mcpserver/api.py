"""The read-only tools an assistant gets over the control REST API (Envoy's edge, as the backend calls it).

Every call is a GET with the bearer token the server was given: the edge and the control service check it as
they check the backend's (a token of its own in ``CONTROL_API_TOKEN``'s list tells the assistant's reads apart
in the audit log). Nothing here can create, change or delete anything: only GET routes are called. Arguments
are checked before any request (a bad one is a ``ToolInputError`` naming the field); an answer other than 2xx is
a ``ControlApiError`` with the API's own message.

| variable | default | meaning |
|---|---|---|
| ``TT_MCP_CONTROL_URL`` | http://127.0.0.1:9110 | the control REST API (Envoy) |
| ``TT_MCP_CONTROL_TOKEN`` | the first ``CONTROL_API_TOKEN`` (or ``.run/control_api_token``) | the bearer token sent |
| ``TT_MCP_HTTP_TIMEOUT_S`` | 10 | timeout of one request |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from common.config import Secret, env_float_seconds, env_str, env_url, load_tokens
from tradingtools.control.v1 import position_pb2, subscription_pb2, trigger_pb2

USER_AGENT = "tradingtools-mcp/2.0"
MAX_PAGE = 500
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_STATES = {
    "subscription": ("SUBSCRIPTION_STATE_", subscription_pb2.SubscriptionState.keys()),
    "position": ("POSITION_STATE_", position_pb2.PositionState.keys()),
    "trigger": ("TRIGGER_STATE_", trigger_pb2.TriggerState.keys()),
}


class ToolInputError(ValueError):
    """An argument no request is sent for; the message names the field."""


class ControlApiError(RuntimeError):
    """The control API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"control API answered {status}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class McpSettings:
    """Where the control API is and the token the tools send."""

    control_url: str
    token: Secret
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> McpSettings:
        """Read the table in the module docstring; ConfigError naming the variable."""
        env = os.environ if env is None else env
        own = env_str(env, "TT_MCP_CONTROL_TOKEN")
        token = load_tokens(env, variable="TT_MCP_CONTROL_TOKEN")[0] if own else load_tokens(env)[0]
        return cls(control_url=env_url(env, "TT_MCP_CONTROL_URL", "http://127.0.0.1:9110"), token=token,
                   timeout_s=env_float_seconds(env, "TT_MCP_HTTP_TIMEOUT_S", 10.0, minimum=0.1))


def _address(field: str, value: str) -> str:
    if not _ADDRESS.match(value.strip()):
        raise ToolInputError(f"{field} must be a wallet address: 0x and 40 hex characters")
    return value.strip().lower()


def _id(field: str, value: str) -> str:
    if not _ID.match(value.strip()):
        raise ToolInputError(f"{field} must be an id (letters, digits, _ and -), e.g. sub_01JD…")
    return value.strip()


def _state(kind: str, value: str) -> dict[str, str]:
    if not value.strip():
        return {}
    prefix, names = _STATES[kind]
    name = value.strip().upper()
    name = name if name.startswith(prefix) else prefix + name
    if name not in names or name.endswith("_UNSPECIFIED"):
        allowed = ", ".join(n.removeprefix(prefix) for n in names if not n.endswith("_UNSPECIFIED"))
        raise ToolInputError(f"state must be one of {allowed}")
    return {"state": name}


def _page(page_size: int, page_token: str) -> dict[str, str]:
    if not 1 <= page_size <= MAX_PAGE:
        raise ToolInputError(f"page_size must be 1..{MAX_PAGE}")
    return {"pageSize": str(page_size), **({"pageToken": page_token.strip()} if page_token.strip() else {})}


class ControlTools:
    """The tools. Each returns the API's JSON (proto3 JSON: lowerCamelCase, decimals as strings)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @classmethod
    def connect(cls, settings: McpSettings) -> ControlTools:
        """Tools on a new client for ``settings`` (close it with :meth:`aclose`)."""
        client = httpx.AsyncClient(base_url=settings.control_url, timeout=settings.timeout_s,
                                   headers={"Authorization": f"Bearer {settings.token.value}",
                                            "User-Agent": USER_AGENT, "Accept": "application/json"})
        return cls(client)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def _get(self, path: str, params: Mapping[str, str] | None = None,
                   ok: tuple[int, ...] = (200,)) -> tuple[int, dict[str, Any]]:
        try:
            reply = await self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ControlApiError(0, f"{type(exc).__name__}: {exc}") from exc
        try:
            body: Any = reply.json()
        except ValueError:
            body = {"message": reply.text[:500]}
        if reply.status_code not in ok:
            message = body.get("message", "") if isinstance(body, dict) else str(body)
            raise ControlApiError(reply.status_code, message or reply.reason_phrase)
        return reply.status_code, body if isinstance(body, dict) else {"value": body}

    async def list_subscriptions(self, follower_proxy: str, leader_proxy: str = "", state: str = "",
                                 page_size: int = 100, page_token: str = "") -> dict[str, Any]:
        """A follower wallet's subscriptions (oldest first), optionally to one leader or in one state
        (ACTIVE, PAUSED, STOPPED). Pass nextPageToken back as page_token for the next page."""
        params = {"followerProxy": _address("follower_proxy", follower_proxy), **_state("subscription", state),
                  **_page(page_size, page_token)}
        if leader_proxy.strip():
            params["leaderProxy"] = _address("leader_proxy", leader_proxy)
        return (await self._get("/subscriptions", params))[1]

    async def get_subscription(self, subscription_id: str) -> dict[str, Any]:
        """One subscription: its sizing, filters, risk caps, exits, state and copy statistics."""
        return (await self._get(f"/subscriptions/{_id('subscription_id', subscription_id)}"))[1]

    async def list_fills(self, subscription_id: str, page_size: int = 100, page_token: str = "") -> dict[str, Any]:
        """The fills of a subscription's copies, newest first, with each copy's latency."""
        path = f"/subscriptions/{_id('subscription_id', subscription_id)}/fills"
        return (await self._get(path, _page(page_size, page_token)))[1]

    async def list_positions(self, wallet: str, state: str = "", page_size: int = 100,
                             page_token: str = "") -> dict[str, Any]:
        """Every position of a follower wallet (copied, manual, external), newest first, optionally in one state
        (OPEN, CLOSED, RESOLVED_WON, RESOLVED_LOST, REDEEMED), with marks and PnL."""
        params = {"wallet": _address("wallet", wallet), **_state("position", state), **_page(page_size, page_token)}
        return (await self._get("/positions", params))[1]

    async def list_subscription_positions(self, subscription_id: str, state: str = "", page_size: int = 100,
                                          page_token: str = "") -> dict[str, Any]:
        """The positions one subscription's copies opened, newest first, optionally in one state."""
        path = f"/subscriptions/{_id('subscription_id', subscription_id)}/positions"
        return (await self._get(path, {**_state("position", state), **_page(page_size, page_token)}))[1]

    async def list_triggers(self, wallet: str, state: str = "", page_size: int = 100,
                            page_token: str = "") -> dict[str, Any]:
        """A wallet's take-profit / stop-loss / trailing triggers, optionally in one state
        (ARMED, FIRED, DONE, FAILED, CANCELLED)."""
        params = {"wallet": _address("wallet", wallet), **_state("trigger", state), **_page(page_size, page_token)}
        return (await self._get("/triggers", params))[1]

    async def get_trigger(self, trigger_id: str) -> dict[str, Any]:
        """One trigger: kind, prices, state, and the SELL order it placed when it fired."""
        return (await self._get(f"/triggers/{_id('trigger_id', trigger_id)}"))[1]

    async def pipeline_status(self) -> dict[str, Any]:
        """Whether the engine is up: the control service answers (serving), and PostgreSQL, Redis and the
        pipeline services are reachable (ready, with each check, or what is not)."""
        health_status, health = await self._get("/health", ok=(200, 503))
        ready_status, ready = await self._get("/ready", ok=(200, 503))
        out: dict[str, Any] = {"serving": health_status == 200 and health.get("status") == "SERVING",
                               "ready": ready_status == 200}
        if ready_status == 200:
            out["checks"] = ready.get("checks", {})
        else:
            out["problem"] = ready.get("message", "")
        return out

    def tools(self) -> list[Any]:
        """Every tool, in the order an assistant sees them."""
        return [self.pipeline_status, self.list_subscriptions, self.get_subscription, self.list_fills,
                self.list_positions, self.list_subscription_positions, self.list_triggers, self.get_trigger]
