"""The paper venue's fills and the liquidity its orders took (pure: time is passed in).

A paper order takes from the stored book as a taker would, so the next paper order finds less: what paper
orders took of a level is kept per (asset, side) and left out of the book the next order walks, whatever size the
book shows the level at since: the venue's book never shows paper takes, so what is left for the next paper order is
the level's size now less them (a maker cancelling part of it, or a new feed session's snapshot, leaves the takes
taken). A take is forgotten when the book no longer shows its level, and ``replenish_ms`` after it was made: a real
taker's liquidity is replenished by the market. Kept in memory only: a restart forgets it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from common.decimals import ONE, ZERO, fmt
from services.executor.domain import venue_orders as v
from services.executor.domain.book_math import (
    Level,
    Levels,
    Walk,
    notional_within,
    volume_within,
    walk_buy_usd,
    walk_sell_size,
    within,
)
from services.executor.domain.pricing import BPS, valid_tick

PRICE_QUANTUM = Decimal("0.00000001")
Takes = tuple[Level, ...]  # (price, shares taken) per level, best first


def paper_order_id(client_order_id: str) -> str:
    """The paper venue's order id of a client order id."""
    return f"paper_{client_order_id}"


def walk_levels(levels: Levels, budget: Decimal, limit: Decimal, buying: bool) -> tuple[Walk, Takes]:
    """Walk best-first ``levels`` within ``limit`` for ``budget`` (USD on a BUY, shares on a SELL): the walk of
    :func:`~services.executor.domain.book_math.walk_buy_usd` / ``walk_sell_size``, with what it took of each level."""
    takes: list[Level] = []
    size = cost = ZERO
    for price, level_size in levels:
        if budget <= 0 or price <= 0 or not within(price, limit, buying):
            break
        w = walk_buy_usd(((price, level_size),), budget, limit) if buying else \
            walk_sell_size(((price, level_size),), budget, limit)
        if w.size > 0:  # a BUY skips a remnant smaller than one share step, as walk_buy_usd does
            takes.append((price, w.size))
            size, cost = size + w.size, cost + w.cost
            budget -= w.cost if buying else w.size
    return Walk(size, cost), tuple(takes)


def rules_answer(req: v.PlaceRequest, tick: Decimal | None, closed: bool) -> v.VenueError | None:
    """The live venue's answer to ``req`` on its market's rules, else None: ``MARKET_CLOSED`` when ``closed``
    (resolved, closed or not accepting orders), ``INVALID_ORDER_MIN_TICK_SIZE`` for a limit off the ``tick`` grid or
    outside [tick, 1 − tick] (no grid known: not checked)."""
    if closed:
        return v.VenueError("http", 400, "MARKET_CLOSED", "market is closed")
    limit = req.limit_price
    if tick is not None and valid_tick(tick) and (limit < tick or limit > ONE - tick or limit % tick != 0):
        return v.VenueError("http", 400, "INVALID_ORDER_MIN_TICK_SIZE",
                            f"limitPrice {fmt(limit)} is not on the {fmt(tick)} grid within [{fmt(tick)}, "
                            f"{fmt(ONE - tick)}]")
    return None


class ClosedMarkets:
    """Assets whose market the paper venue found closed, so that it stays closed to paper orders while no entry is
    stored for it (gone, or unreadable). In memory, at most ``limit`` assets (the oldest
    forgotten first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._assets: dict[str, None] = {}

    def closed(self, asset_id: str, known: bool | None) -> bool:
        """Whether ``asset_id`` takes no order: ``known`` as its stored entry says (None: no entry stored)."""
        if known is None:
            return asset_id in self._assets
        if not known:
            self._assets.pop(asset_id, None)
        elif asset_id not in self._assets:
            if len(self._assets) >= self.limit:
                del self._assets[next(iter(self._assets))]
            self._assets[asset_id] = None
        return known

    def __len__(self) -> int:
        return len(self._assets)


def simulate(req: v.PlaceRequest, bids: Levels, asks: Levels, fee_bps: Decimal) -> tuple[v.VenueResult, Takes]:
    """Fill ``req`` against a book: the final order (or a 4xx-style VenueError) and what it took of each level.

    FOK fills all or nothing, FAK what is available within the limit (the rest is killed); the fee is taken from
    what the order receives, as the live venue takes it: shares on a BUY (``feeShares``), USD on a SELL (its
    ``takingAmount`` is the proceeds less the fee, the same rate of their worth)."""
    buying = req.side == "BUY"
    if req.order_type not in ("FOK", "FAK"):
        return v.VenueError("http", 400, "PAPER_ORDER_TYPE_UNSUPPORTED", f"{req.order_type} is not simulated"), ()
    if buying:
        budget = req.amount_usd or ZERO
        if budget <= 0:
            return v.VenueError("http", 400, "INVALID_ORDER_MIN_SIZE", "amountUsd must be positive"), ()
        if req.order_type == "FOK" and notional_within(asks, req.limit_price, True) < budget:
            return v.VenueError("http", 400, "FOK_ORDER_NOT_FILLED_ERROR", "not enough asks within the limit"), ()
    else:
        budget = req.size or ZERO
        if budget <= 0:
            return v.VenueError("http", 400, "INVALID_ORDER_MIN_SIZE", "size must be positive"), ()
        if req.order_type == "FOK" and volume_within(bids, req.limit_price, False) < budget:
            return v.VenueError("http", 400, "FOK_ORDER_NOT_FILLED_ERROR", "not enough bids within the limit"), ()
    walk, takes = walk_levels(asks if buying else bids, budget, req.limit_price, buying)
    oid = paper_order_id(req.client_order_id)
    if walk.size <= 0:
        return v.VenueOrder(oid, req.client_order_id, v.CANCELLED), ()
    avg = (walk.cost / walk.size).quantize(PRICE_QUANTUM)
    if buying:
        fee = walk.size * fee_bps / BPS
        return v.VenueOrder(oid, req.client_order_id, v.CONFIRMED, walk.size, avg, making_amount=walk.cost,
                            taking_amount=walk.size - fee, fee_shares=fee), takes
    return v.VenueOrder(oid, req.client_order_id, v.CONFIRMED, walk.size, avg, making_amount=walk.size,
                        taking_amount=walk.cost - walk.cost * fee_bps / BPS), takes


@dataclass(slots=True)
class _Level:
    """What paper orders took of one level."""

    takes: deque[tuple[int, Decimal]] = field(default_factory=deque)  # (expires at ms, shares), oldest first
    total: Decimal = ZERO  # the shares of ``takes``: a fan-out's orders each read it (not a sum over its takes)

    def taken(self, now_ms: int) -> Decimal:
        """The shares taken that have not expired at ``now_ms``."""
        while self.takes and self.takes[0][0] <= now_ms:
            self.total -= self.takes.popleft()[1]
        return self.total

    def add(self, expires_ms: int, shares: Decimal) -> None:
        """A take of ``shares`` until ``expires_ms``."""
        self.takes.append((expires_ms, shares))
        self.total += shares

    def remove(self, expires_ms: int, shares: Decimal) -> None:
        """Undo a take :meth:`add` recorded (nothing when it expired already)."""
        if (expires_ms, shares) in self.takes:
            self.takes.remove((expires_ms, shares))
            self.total -= shares


class PaperBook:
    """What paper orders took of each level, per (asset, side taken): BUYs take asks, SELLs bids.

    Call :meth:`net` and then :meth:`take` with no await in between: with one event loop, concurrent orders then
    see each other's takes."""

    def __init__(self, replenish_ms: int) -> None:
        self.replenish_ms = replenish_ms
        self._levels: dict[tuple[str, str], dict[Decimal, _Level]] = {}
        self._sweep_at_ms = 0

    def net(self, asset_id: str, side: str, levels: Levels, now_ms: int) -> Levels:
        """``levels`` (the side a ``side`` order takes) less what paper orders took of each; takes of levels the
        book no longer shows, and expired ones, are forgotten."""
        key = (asset_id, side)
        known = self._levels.get(key)
        if not known:
            return levels
        out: list[Level] = []
        kept: dict[Decimal, _Level] = {}
        for price, size in levels:
            lv = known.get(price)
            if lv is None:
                out.append((price, size))
                continue
            left = size - lv.taken(now_ms)
            if lv.takes:
                kept[price] = lv
            if left > 0:
                out.append((price, left))
        if kept:
            self._levels[key] = kept
        else:
            del self._levels[key]
        return tuple(out)

    def take(self, asset_id: str, side: str, takes: Takes, now_ms: int) -> None:
        """Record ``takes`` (made from the book :meth:`net` returned) right after :meth:`net`."""
        self._sweep(now_ms)
        if not takes:
            return
        known = self._levels.setdefault((asset_id, side), {})
        for price, shares in takes:
            lv = known.get(price)
            if lv is None:
                lv = known[price] = _Level()
            lv.add(now_ms + self.replenish_ms, shares)

    def give_back(self, asset_id: str, side: str, takes: Takes, now_ms: int) -> None:
        """Undo ``takes`` recorded at ``now_ms`` (an order whose result was not kept)."""
        known = self._levels.get((asset_id, side), {})
        for price, shares in takes:
            lv = known.get(price)
            if lv is not None:
                lv.remove(now_ms + self.replenish_ms, shares)

    def _sweep(self, now_ms: int) -> None:
        """Drop expired takes of every asset now and then (an asset no order walks again is never netted)."""
        if now_ms < self._sweep_at_ms:
            return
        self._sweep_at_ms = now_ms + self.replenish_ms
        for key in list(self._levels):
            known = {p: lv for p, lv in self._levels[key].items() if lv.taken(now_ms) > 0}
            if known:
                self._levels[key] = known
            else:
                del self._levels[key]

    def __len__(self) -> int:
        """Levels with takes kept (expired ones until the next sweep)."""
        return sum(len(levels) for levels in self._levels.values())
