"""Ticks held back while Redis does not answer: a bounded backlog that still gives guard, once Redis is back, every
price that could fire (those still young enough), each asset's highest and lowest prices of every source after any
moment (trailing high-water marks, crossings held as too late), every STALE tick and each asset's latest tick."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from common.resp import RespConnection
from common.streams import PRICE_TICKS
from services.ingest import clob
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.metrics import IngestMetrics
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

D = Decimal
MARKET = "0x" + "ab" * 32
ASSETS = [f"{i:077d}" for i in range(1, 5)]
OLD_TICKS = 120_000  # 60 s at 2,000 ticks/s, received 75 s to 15 s ago: too old to fire on when Redis is back
YOUNG_TICKS = 2_000  # received in the last 0.2 s: guard may still fire on these
BACKLOG_BOUND = 50_000  # ~5 s of ticks at 10,000/s


def _frame(asset: str, ts: int, bid: str, old_bid: str | None) -> dict[str, Any]:
    changes = [{"asset_id": asset, "price": bid, "size": "100", "side": "BUY", "hash": f"{ts:x}"}]
    if old_bid is not None:
        changes.insert(0, {"asset_id": asset, "price": old_bid, "size": "0", "side": "BUY", "hash": f"{ts:x}0"})
    for c in changes:
        c.update(best_bid=bid, best_ask="0.900")
    return {"market": MARKET, "price_changes": changes, "timestamp": str(ts), "event_type": "price_change"}


def _trade(asset: str, ts: int, price: str) -> dict[str, Any]:
    return {"asset_id": asset, "event_type": "last_trade_price", "fee_rate_bps": "0", "market": MARKET,
            "price": price, "side": "BUY", "size": "5", "timestamp": str(ts), "transaction_hash": f"0x{ts:064x}"}


def _prices(t: mpb.PriceTick) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    return tuple(D(s) if s else None for s in (t.best_bid, t.mid, t.last_trade_price))  # type: ignore[return-value]


class _Walk:
    """Each asset's best bid walks one tick (0.001) at a time in [0.100, 0.800] under an ask of 0.900 (it seldom
    meets a bound: its extremes since a moment differ from moment to moment); now and then a trade."""

    def __init__(self, books: BookState, pub: BookPublisher) -> None:
        self.books, self.pub = books, pub
        self.rng = random.Random(7)
        self.bid = dict.fromkeys(ASSETS, 450)
        self.sent: list[mpb.PriceTick] = []  # every tick marked, as built

    def step(self, recv_ns: int, ts: int) -> None:
        asset = ASSETS[self.rng.randrange(len(ASSETS))]
        old = self.bid[asset]
        new = min(800, old + 1) if self.rng.random() < 0.5 else max(100, old - 1)
        self.bid[asset] = new
        if ts % 37 == 0:
            frame = _trade(asset, ts, f"0.{self.rng.randrange(100, 900):03d}")
        else:
            frame = _frame(asset, ts, f"0.{new:03d}", f"0.{old:03d}" if new != old else None)
            if new == old:
                return
        self._apply(frame, recv_ns, ts)

    def _apply(self, frame: dict[str, Any], recv_ns: int, ts: int) -> None:
        for touched in self.books.apply(clob.parse_event(frame), ts):
            if touched.emit:
                self.sent.append(self.books.price_tick(touched.asset_id, touched.kind, recv_ns))
            self.pub.mark(touched, recv_ns)

    def lose_and_resync(self, recv_ns: int, ts: int) -> None:
        """The book socket drops (a STALE tick each), then every book's snapshot comes back."""
        for touched in self.books.feed_lost():
            if touched.emit:
                self.sent.append(self.books.price_tick(touched.asset_id, touched.kind, recv_ns))
            self.pub.mark(touched, recv_ns)
        for asset in ASSETS:
            bids = [{"price": f"0.{self.bid[asset]:03d}", "size": "100"}]
            self._apply({"event_type": "book", "asset_id": asset, "market": MARKET, "timestamp": str(ts),
                         "bids": bids, "asks": [{"price": "0.900", "size": "100"}], "tick_size": "0.001"}, recv_ns, ts)


async def test_a_long_redis_outage_keeps_a_bounded_backlog_with_every_price_guard_acts_on(redis_url: str) -> None:
    books = BookState()
    for a in ASSETS:
        books.track(a)
        books.apply(clob.parse_event({"event_type": "book", "asset_id": a, "market": MARKET, "timestamp": "1",
                                      "bids": [{"price": "0.450", "size": "100"}],
                                      "asks": [{"price": "0.900", "size": "100"}], "tick_size": "0.001"}), 1)
    pub = BookPublisher(lambda: RespConnection.open(redis_url), books, IngestMetrics())  # never connected: Redis down
    walk = _Walk(books, pub)
    now = time.time_ns()
    old_from = now - 75 * 10**9
    for i in range(OLD_TICKS):
        walk.step(old_from + i * 500_000, 1_000 + i)  # one every 0.5 ms
        if i == OLD_TICKS // 2:
            walk.lose_and_resync(old_from + i * 500_000 + 1, 1_000 + i)
    young_from = time.time_ns() - 200_000_000
    n_old = len(walk.sent)
    for i in range(YOUNG_TICKS):
        walk.step(young_from + i * 100_000, 1_000 + OLD_TICKS + i)
    young = walk.sent[n_old:]

    await pub.flush()  # Redis is back
    r = aioredis.from_url(redis_url)
    try:
        rows: Any = await r.xrange(PRICE_TICKS)
    finally:
        await r.aclose()
        pub.close()
    logged = [mpb.PriceTick.FromString(f[b"p"]) for _id, f in rows]

    assert len(logged) <= BACKLOG_BOUND
    stamps = [t.received_time_ns for t in logged]
    assert stamps == sorted(stamps)  # in the order they were received
    assert [t for t in logged if t.received_time_ns >= young_from] == young  # still young: every one
    assert [t for t in logged if t.kind == mpb.TICK_KIND_STALE] == [t for t in walk.sent
                                                                   if t.kind == mpb.TICK_KIND_STALE]
    for asset in ASSETS:
        mine = [t for t in walk.sent if t.asset_id == asset]
        kept = [t for t in logged if t.asset_id == asset]
        assert kept[-1] == mine[-1]
        cuts = [t.received_time_ns for t in mine[::500]]  # after any moment (a trailing stop armed then)
        assert _extremes_since(kept, cuts) == _extremes_since(mine, cuts)


Extremes = dict[tuple[bool, int], tuple[Decimal, Decimal]]


def _extremes_since(ticks: list[mpb.PriceTick], cuts: list[int]) -> list[Extremes]:
    """For each cut, the highest and lowest price of each (staleness, source) among ``ticks`` received since then."""
    out: list[Extremes] = []
    now: Extremes = {}
    i = len(ticks)
    for cut in sorted(cuts, reverse=True):
        while i and ticks[i - 1].received_time_ns >= cut:
            i -= 1
            for source, p in enumerate(_prices(ticks[i])):
                if p is not None:
                    hi, lo = now.get((ticks[i].stale, source), (p, p))
                    now[ticks[i].stale, source] = (max(hi, p), min(lo, p))
        out.append(dict(now))
    return out
