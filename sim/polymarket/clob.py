"""Simulated CLOB: market-channel websocket (``/ws/market``) and REST (``/book``, ``/markets/{id}``, ``/tick-size``).

The websocket takes ``{"assets_ids": [...], "type": "market"}`` then ``{"operation": "subscribe" |
"unsubscribe", "assets_ids": [...]}`` without reconnecting, answers ``PING`` with ``PONG``, and sends
the initial ``book`` snapshots as one JSON array frame. Book changes come from :class:`sim.books.SimBooks`.

Resolutions: :meth:`ClobServer.resolve` (also ``POST /sim/resolve`` for the standalone simulator) sends the
socket's ``market_resolved`` and makes ``/markets/{id}`` report the market closed with its winner, either side
optional or late. :meth:`ClobServer.answer_market_next` queues raw answers (status, body) for ``/markets/{id}``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from sim.books import SimBooks
from sim.polymarket.model import SimMarket
from sim.polymarket.wsbase import WsClient, WsServer


class ClobServer(WsServer):
    """CLOB websocket + REST on one port."""

    def __init__(self, books: SimBooks | None = None) -> None:
        super().__init__()
        self.books = books or SimBooks()
        self.books.listen(self.publish)
        self.markets: dict[str, SimMarket] = {}
        self.pings = 0
        self.rest_requests: list[str] = []
        self._last_frame: dict[int, dict[str, Any]] = {}  # strong refs: ids of freed dicts are reused
        self._market_answers: dict[str, deque[tuple[int, Any]]] = {}
        self._timers: list[asyncio.TimerHandle] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/book", self.rest_book)
        app.router.add_get("/tick-size", self.rest_tick_size)
        app.router.add_get("/markets/{condition_id}", self.rest_market)
        app.router.add_post("/sim/resolve", self.admin_resolve)
        app.router.add_get("/ws/market", self.handle_ws)
        app.router.add_get("/{tail:.*}", self.handle_ws)

    def add_market(self, market: SimMarket) -> None:
        """Register a market (and its tokens' books)."""
        self.markets[market.condition_id] = market
        for token in market.tokens:
            book = self.books.book(token)
            book.market = market.condition_id
            book.tick_size = market.tick_size

    def market_of(self, asset_id: str) -> SimMarket | None:
        """The market a token belongs to."""
        for market in self.markets.values():
            if asset_id in market.tokens:
                return market
        return None

    async def on_text(self, client: WsClient, text: str) -> None:
        if text.strip() == "PING":
            self.pings += 1
            if not self.stalled:
                client.send("PONG")
            return
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("assets_ids"), list):
            return
        ids = [a for a in msg["assets_ids"] if isinstance(a, str)]
        if msg.get("operation") == "unsubscribe":
            client.subs.difference_update(ids)
            return
        if msg.get("type") == "market" or msg.get("operation") == "subscribe":
            new = [a for a in ids if a not in client.subs]
            client.subs.update(ids)
            snapshots = [self.books.books[a].frame() for a in new if a in self.books.books]
            if snapshots and not self.stalled:
                client.send(orjson.dumps(snapshots).decode())

    def publish(self, asset_id: str, frame: dict[str, Any]) -> None:
        """Send a frame to the clients subscribed to ``asset_id`` (once per client per frame)."""
        if frame.get("event_type") == "tick_size_change":
            market = self.market_of(asset_id)
            if market is not None:
                market.tick_size = Decimal(frame["new_tick_size"])
        if self.stalled:
            return
        text: str | None = None
        for client in list(self.clients):
            if asset_id in client.subs and self._last_frame.get(id(client)) is not frame:
                self._last_frame[id(client)] = frame
                text = text or orjson.dumps(frame).decode()
                client.send(text)

    def publish_raw_to_all(self, text: str) -> None:
        """Replay: send a recorded frame to every client."""
        if not self.stalled:
            self.send_raw(text)

    async def rest_book(self, request: web.Request) -> web.Response:
        """``GET /book?token_id=``."""
        self.rest_requests.append(str(request.rel_url))
        token = request.query.get("token_id", "")
        if not token.isdigit():
            return web.json_response({"error": "Invalid token id"}, status=400)
        book = self.books.books.get(token)
        if book is None:
            return web.json_response({"error": "No orderbook exists for the requested token id"}, status=404)
        body = book.frame(event_type="")
        market = self.market_of(token)
        body["min_order_size"] = str(market.min_order_size) if market else "5"
        body["neg_risk"] = market.neg_risk if market else False
        return web.json_response(body)

    async def rest_tick_size(self, request: web.Request) -> web.Response:
        """``GET /tick-size?token_id=``: a number, like the venue."""
        self.rest_requests.append(str(request.rel_url))
        book = self.books.books.get(request.query.get("token_id", ""))
        if book is None:
            return web.json_response({"error": "No orderbook exists for the requested token id"}, status=404)
        return web.json_response({"minimum_tick_size": float(book.tick_size)})

    async def rest_market(self, request: web.Request) -> web.Response:
        """``GET /markets/{condition_id}`` (or the next answer queued by :meth:`answer_market_next`)."""
        self.rest_requests.append(str(request.rel_url))
        condition_id = request.match_info["condition_id"].lower()
        queued = self._market_answers.get(condition_id)
        if queued:
            status, body = queued.popleft()
            text = body if isinstance(body, str) else orjson.dumps(body).decode()
            return web.Response(text=text, status=status, content_type="application/json")
        market = self.markets.get(condition_id)
        if market is None:
            return web.json_response({"error": "market not found"}, status=404)
        return web.json_response(market.rest())

    def answer_market_next(self, condition_id: str, status: int = 200, body: Any = "") -> None:
        """Answer the next ``/markets/{condition_id}`` with ``status`` and ``body`` (a str is sent as is)."""
        self._market_answers.setdefault(condition_id.lower(), deque()).append((status, body))

    def resolve(self, market: SimMarket, winner: str, *, socket: bool = True, socket_winner: bool = True,
                rest: bool = True, rest_delay_s: float = 0.0) -> None:
        """Resolve ``market`` with ``winner`` (one of its tokens). ``socket``: send ``market_resolved`` to its
        subscribers (``socket_winner`` False: with an empty ``winning_asset_id``); ``rest``: ``/markets/{id}``
        reports it closed, not accepting orders, ``winner`` true on the winning token (after ``rest_delay_s``).
        An unset ``end_date_iso`` becomes now."""
        if winner not in market.tokens:
            raise ValueError(f"winner {winner} is not a token of market {market.condition_id}")
        if socket:
            outcome, _index = market.outcome_of(winner)
            self.books.resolve(market.condition_id, list(market.tokens), winner if socket_winner else "",
                               outcome if socket_winner else "")
        if not rest:
            return

        def close_on_rest() -> None:
            market.closed, market.accepting_orders, market.winner = True, False, winner
            if not market.end_date_iso:
                market.end_date_iso = datetime.fromtimestamp(int(time.time()), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        if rest_delay_s > 0:
            self._timers.append(asyncio.get_running_loop().call_later(rest_delay_s, close_on_rest))
        else:
            close_on_rest()

    async def admin_resolve(self, request: web.Request) -> web.Response:
        """``POST /sim/resolve`` ``{"condition_id", "winner", "socket", "socket_winner", "rest", "rest_delay_s"}``
        (the simulator's own control, not a venue endpoint)."""
        try:
            body = orjson.loads(await request.read())
            market = self.markets[str(body["condition_id"]).lower()]
            winner = str(body.get("winner") or market.tokens[0])
            self.resolve(market, winner, socket=bool(body.get("socket", True)),
                         socket_winner=bool(body.get("socket_winner", True)), rest=bool(body.get("rest", True)),
                         rest_delay_s=float(body.get("rest_delay_s", 0.0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return web.json_response({"error": f"bad resolve request: {exc!r}"}, status=400)
        return web.json_response({"condition_id": market.condition_id, "winner": winner})

    async def stop(self) -> None:
        """Cancel late REST resolutions, then close."""
        for timer in self._timers:
            timer.cancel()
        await super().stop()
