"""Simulated data-api (``https://data-api.polymarket.com``): ``/activity`` and ``/trades``.

Like the venue: ``/trades`` defaults to ``takerOnly=true`` (maker fills hidden), ``/activity`` takes
``start``/``end``/``type``/``sortBy``/``sortDirection``, limits and offset caps answer 400, rows
appear ``lag_s`` after the trade (indexing delay), and Python's default User-Agent is refused (403)
as Cloudflare does. Faults: :meth:`rate_limit_next` (429 with Retry-After), :meth:`fail_next`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sim.polymarket.model import SimTrade

ACTIVITY_MAX_LIMIT = 500
ACTIVITY_MAX_OFFSET = 5000
TRADES_MAX_LIMIT = 10_000
TRADES_MAX_OFFSET = 10_000


@dataclass
class _Stored:
    activity_row: dict[str, Any]
    trades_row: dict[str, Any] | None
    wallet: str
    timestamp_s: int
    activity_type: str
    side: str
    taker: bool
    size: float
    cash: float
    visible_at: float


class DataApiServer:
    """The data-api REST endpoints over an in-memory store of trades and activity rows."""

    def __init__(self) -> None:
        self.rows: list[_Stored] = []
        self.lag_s = 0.0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.strict_user_agent = True
        self._rate_limited = 0
        self._retry_after_s = 1.0
        self._failures: list[int] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    def add(self, trade: SimTrade, *, lag_s: float | None = None) -> None:
        """Store a trade or activity row; it becomes visible after the lag."""
        row = trade.activity_row()
        self.rows.append(_Stored(row, trade.trades_row() if trade.activity_type == "TRADE" else None,
                                 trade.wallet.lower(), trade.timestamp_s, trade.activity_type, trade.side,
                                 trade.taker, float(trade.size), float(trade.price * trade.size),
                                 time.monotonic() + (self.lag_s if lag_s is None else lag_s)))

    def add_row(self, row: dict[str, Any]) -> bool:
        """Store a recorded row (``/activity`` or ``/trades`` shape) as it is; False when unusable."""
        wallet, ts = row.get("proxyWallet"), row.get("timestamp")
        if not isinstance(wallet, str) or not isinstance(ts, int | float):
            return False
        kind = str(row.get("type") or "TRADE")
        size, price = row.get("size"), row.get("price")
        size = size if isinstance(size, int | float) else 0
        price = price if isinstance(price, int | float) else 0
        trades_row = {k: v for k, v in row.items() if k not in ("type", "usdcSize")} if kind == "TRADE" else None
        self.rows.append(_Stored(dict(row), trades_row, wallet.lower(), int(ts), kind, str(row.get("side") or ""),
                                 True, float(size), float(size) * float(price), time.monotonic() + self.lag_s))
        return True

    def rate_limit_next(self, n: int, retry_after_s: float = 1.0) -> None:
        """The next ``n`` requests get 429 Too Many Requests."""
        self._rate_limited = n
        self._retry_after_s = retry_after_s

    def fail_next(self, *statuses: int) -> None:
        """The next requests fail with these statuses, in order."""
        self._failures.extend(statuses)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port."""
        app = web.Application()
        app.router.add_get("/activity", self.activity)
        app.router.add_get("/trades", self.trades)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        self.port = int(self.runner.addresses[-1][1])
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def _gate(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, dict(request.query)))
        agent = request.headers.get("User-Agent", "")
        if self.strict_user_agent and (not agent or agent.startswith(("python-httpx", "Python-urllib",
                                                                       "python-requests", "aiohttp"))):
            return web.Response(status=403, text="<html>Attention Required! | Cloudflare</html>")
        if self._rate_limited > 0:
            self._rate_limited -= 1
            return web.Response(status=429, text="Too Many Requests",
                                headers={"Retry-After": str(self._retry_after_s)})
        if self._failures:
            return web.json_response({"error": "simulated failure"}, status=self._failures.pop(0))
        return None

    def _visible(self, user: str) -> list[_Stored]:
        now = time.monotonic()
        return [s for s in self.rows if s.visible_at <= now and s.wallet == user]

    async def activity(self, request: web.Request) -> web.Response:
        """``GET /activity?user=…``."""
        if (denied := self._gate(request)) is not None:
            return denied
        q = request.query
        try:
            user = _user(q)
            limit = _int(q, "limit", 100, 0, ACTIVITY_MAX_LIMIT, clamp=True)
            offset = _int(q, "offset", 0, 0, ACTIVITY_MAX_OFFSET)
            start = _int(q, "start", 0, 0, 10**12)
            end = _int(q, "end", 10**12, 0, 10**12)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        types = {t.strip().upper() for t in q.get("type", "").split(",") if t.strip()}
        rows = [t for t in self._visible(user) if start <= t.timestamp_s <= end
                and (not types or t.activity_type in types)
                and (not q.get("side") or t.side == q["side"].upper())]
        rows = _sort(rows, q.get("sortBy", "TIMESTAMP"), q.get("sortDirection", "DESC"))
        return web.json_response([t.activity_row for t in rows[offset:offset + limit]])

    async def trades(self, request: web.Request) -> web.Response:
        """``GET /trades?user=…`` (``takerOnly`` defaults to true)."""
        if (denied := self._gate(request)) is not None:
            return denied
        q = request.query
        try:
            user = _user(q)
            limit = _int(q, "limit", 100, 0, TRADES_MAX_LIMIT)
            offset = _int(q, "offset", 0, 0, TRADES_MAX_OFFSET)
            start = _int(q, "start", 0, 0, 10**12)
            end = _int(q, "end", 10**12, 0, 10**12)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        taker_only = q.get("takerOnly", "true").lower() != "false"
        rows = [t for t in self._visible(user) if t.trades_row is not None and (t.taker or not taker_only)
                and start <= t.timestamp_s <= end and (not q.get("side") or t.side == q["side"].upper())]
        rows = _sort(rows, "TIMESTAMP", "DESC")
        return web.json_response([t.trades_row for t in rows[offset:offset + limit]])


def _user(q: Any) -> str:
    user = q.get("user", "").lower()
    if len(user) != 42 or not user.startswith("0x"):
        raise ValueError("user must be an address")
    return user


def _int(q: Any, name: str, default: int, lo: int, hi: int, *, clamp: bool = False) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if clamp:
        return max(lo, min(hi, value))
    if not lo <= value <= hi:
        if name == "offset":
            raise ValueError(f"max historical activity offset of {hi} exceeded")
        raise ValueError(f"{name} out of range")
    return value


def _sort(rows: list[_Stored], by: str, direction: str) -> list[_Stored]:
    keys = {"TOKENS": lambda t: t.size, "CASH": lambda t: t.cash}
    return sorted(rows, key=keys.get(by.upper(), lambda t: t.timestamp_s), reverse=direction.upper() != "ASC")
