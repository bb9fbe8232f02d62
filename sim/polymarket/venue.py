"""The simulated Polymarket: RTDS, CLOB (ws + REST) and data-api servers plus scenario helpers."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sim.books import SimBooks
from sim.polymarket.clob import ClobServer
from sim.polymarket.dataapi import DataApiServer
from sim.polymarket.model import SimMarket, SimTrade, random_hex, random_token_id
from sim.polymarket.rtds import RtdsServer

BOTH = ("rtds", "data_api")


class PolymarketSim:
    """Start with :meth:`start`; point ingest at :meth:`env`; drive it with :meth:`trade` and the faults."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.rtds = RtdsServer()
        self.books = SimBooks()
        self.clob = ClobServer(self.books)
        self.data = DataApiServer()
        self.trades: list[SimTrade] = []
        self.host = "127.0.0.1"

    async def start(self, host: str = "127.0.0.1", *, rtds_port: int = 0, clob_port: int = 0,
                    data_port: int = 0) -> PolymarketSim:
        """Listen on loopback (port 0 = free port)."""
        self.host = host
        await self.rtds.start(host, rtds_port)
        await self.clob.start(host, clob_port)
        await self.data.start(host, data_port)
        return self

    async def stop(self) -> None:
        """Close everything."""
        await self.rtds.stop()
        await self.clob.stop()
        await self.data.stop()

    def env(self) -> dict[str, str]:
        """The ingest URL variables pointing here."""
        h = self.host
        return {"TT_RTDS_URL": f"ws://{h}:{self.rtds.port}",
                "TT_CLOB_WS_URL": f"ws://{h}:{self.clob.port}/ws/market",
                "TT_CLOB_API_URL": f"http://{h}:{self.clob.port}",
                "TT_DATA_API_URL": f"http://{h}:{self.data.port}"}

    def add_market(self, *, condition_id: str | None = None, tokens: tuple[str, str] | None = None,
                   tick_size: str = "0.01", mid: str = "0.5", levels: int = 5, level_size: str = "100",
                   **kwargs: Any) -> SimMarket:
        """A new market with a two-sided book on both tokens around ``mid`` (token 1 around 1 − mid)."""
        market = SimMarket(condition_id=(condition_id or random_hex(32, self.rng)).lower(),
                           tokens=tokens or (random_token_id(self.rng), random_token_id(self.rng)),
                           tick_size=Decimal(tick_size), **kwargs)
        self.clob.add_market(market)
        tick, unit = Decimal(tick_size), Decimal(level_size)
        for token, m in zip(market.tokens, (Decimal(mid), 1 - Decimal(mid)), strict=True):
            bids = [(m - tick * i, unit * i) for i in range(1, levels + 1) if m - tick * i > 0]
            asks = [(m + tick * i, unit * i) for i in range(1, levels + 1) if m + tick * i < 1]
            self.books.set_book(token, bids=bids, asks=asks, market=market.condition_id, tick_size=tick)
        return market

    def trade(self, wallet: str, *, market: SimMarket | None = None, token: str | None = None, side: str = "BUY",
              price: Any = "0.5", size: Any = "10", tx: str | None = None, feeds: Iterable[str] = BOTH,
              rtds_types: Iterable[str] = ("trades",), taker: bool = True, fee: Any = None,
              timestamp_s: int | None = None, data_lag_s: float | None = None) -> SimTrade:
        """Publish one fill of ``wallet`` on the chosen feeds (default: RTDS trades and data-api)."""
        market = market or (self.clob.market_of(token) if token else None)
        token = token or (market.tokens[0] if market else random_token_id(self.rng))
        outcome, index = market.outcome_of(token) if market else ("Yes", 0)
        trade = SimTrade(
            wallet=wallet.lower(), asset=token, side=side, price=Decimal(str(price)), size=Decimal(str(size)),
            tx_hash=tx or random_hex(32, self.rng), condition_id=market.condition_id if market else random_hex(32),
            outcome=outcome, outcome_index=index, slug=market.slug if market else "sim-market",
            event_slug=market.event_slug if market else "sim-event", title=market.title if market else "sim",
            timestamp_s=timestamp_s or int(time.time()), fee=Decimal(str(fee)) if fee is not None else None,
            taker=taker)
        self.publish(trade, feeds=feeds, rtds_types=rtds_types, data_lag_s=data_lag_s)
        return trade

    def publish(self, trade: SimTrade, *, feeds: Iterable[str] = BOTH, rtds_types: Iterable[str] = ("trades",),
                data_lag_s: float | None = None) -> None:
        """Send an existing trade (again) on the chosen feeds."""
        feeds = tuple(feeds)
        self.trades.append(trade)
        if "rtds" in feeds:
            for typ in rtds_types:
                if typ == "orders_matched" and not trade.taker:
                    continue  # orders_matched carries the taker only
                self.rtds.publish("activity", typ, trade.rtds_payload())
        if "data_api" in feeds:
            self.data.add(trade, lag_s=data_lag_s)

    def match(self, taker: str, maker: str, *, market: SimMarket, price: Any = "0.5", size: Any = "10",
              feeds: Iterable[str] = BOTH, rtds_types: Iterable[str] = ("trades", "orders_matched"),
              tx: str | None = None) -> tuple[SimTrade, SimTrade]:
        """A taker BUY of token 0 matched against a maker BUY of token 1 (mint), one transaction."""
        tx = tx or random_hex(32, self.rng)
        p = Decimal(str(price))
        t = self.trade(taker, market=market, token=market.tokens[0], price=p, size=size, tx=tx, feeds=feeds,
                       rtds_types=rtds_types, taker=True, fee="0.1")
        m = self.trade(maker, market=market, token=market.tokens[1], price=1 - p, size=size, tx=tx, feeds=feeds,
                       rtds_types=rtds_types, taker=False)
        return t, m

    def resolve(self, market: SimMarket, winner: str | None = None, *, socket: bool = True, socket_winner: bool = True,
                rest: bool = True, rest_delay_s: float = 0.0) -> str:
        """Resolve ``market`` (``winner``: token 0 unless given) on the socket and/or CLOB REST
        (:meth:`ClobServer.resolve`); returns the winner."""
        won = winner or market.tokens[0]
        self.clob.resolve(market, won, socket=socket, socket_winner=socket_winner, rest=rest,
                          rest_delay_s=rest_delay_s)
        return won

    def activity(self, wallet: str, kind: str = "REDEEM", *, size: Any = "3.5", market: SimMarket | None = None,
                 tx: str | None = None) -> SimTrade:
        """A non-trade activity row (data-api only, like the venue)."""
        row = SimTrade(wallet=wallet.lower(), asset="", side="", price=Decimal(0), size=Decimal(str(size)),
                       tx_hash=tx or random_hex(32, self.rng),
                       condition_id=market.condition_id if market else random_hex(32, self.rng),
                       activity_type=kind, usdc_size=Decimal(str(size)), outcome="", outcome_index=999)
        self.data.add(row)
        self.trades.append(row)
        return row
