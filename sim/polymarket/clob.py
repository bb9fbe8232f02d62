"""Simulated CLOB: market-channel websocket (``/ws/market``) and REST (``/book``, ``/markets/{id}``, ``/tick-size``).

The websocket takes ``{"assets_ids": [...], "type": "market"}`` then ``{"operation": "subscribe" |
"unsubscribe", "assets_ids": [...]}`` without reconnecting, answers ``PING`` with ``PONG``, and sends
the initial ``book`` snapshots as one JSON array frame. Book changes come from :class:`sim.books.SimBooks`.
:meth:`ClobServer.withhold_book` plays a market whose book is gone (``/book`` 404, no snapshot).
"""

from __future__ import annotations

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
        # assets the venue has no book for (a market whose book went away): ``/book`` answers 404 and a
        # subscription gets no snapshot; their changes are still published
        self.withheld: set[str] = set()
        self._last_frame: dict[int, dict[str, Any]] = {}  # strong refs: ids of freed dicts are reused

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/book", self.rest_book)
        app.router.add_get("/tick-size", self.rest_tick_size)
        app.router.add_get("/markets/{condition_id}", self.rest_market)
        app.router.add_get("/ws/market", self.handle_ws)
        app.router.add_get("/{tail:.*}", self.handle_ws)

    def add_market(self, market: SimMarket) -> None:
        """Register a market (and its tokens' books)."""
        self.markets[market.condition_id] = market
        for token in market.tokens:
            book = self.books.book(token)
            book.market = market.condition_id
            book.tick_size = market.tick_size

    def withhold_book(self, asset_id: str, withheld: bool = True) -> None:
        """The venue has no book for ``asset_id`` (``/book`` 404, no snapshot on subscribe) until called with
        ``withheld=False``."""
        if withheld:
            self.withheld.add(asset_id)
        else:
            self.withheld.discard(asset_id)

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
            snapshots = [self.books.books[a].frame() for a in new if a in self.books.books and a not in self.withheld]
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
        if book is None or token in self.withheld:
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
        """``GET /markets/{condition_id}``."""
        self.rest_requests.append(str(request.rel_url))
        market = self.markets.get(request.match_info["condition_id"].lower())
        if market is None:
            return web.json_response({"error": "market not found"}, status=404)
        return web.json_response(market.rest())
