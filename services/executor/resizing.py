"""Re-sizing a SELL a venue refused for lack of shares (``INVALID_ORDER_NOT_ENOUGH_BALANCE``): it is sent once more
for what the venue counts the wallet holding, a copy of a position that keeps a split for no more than its
subscription's part (:func:`~services.executor.domain.reconcile.resize_size`). A re-sized order refused again is not
re-sized again.

The venue's count is per venue: LIVE (INSIDERS), the wallet's positions at the venue, read by reconciling the wallet
(:class:`~services.executor.reconciling.Reconciler`, whose rounds run these re-sizes); PAPER, the wallet's booked
PAPER position (the paper venue answers a SELL on it and has no positions of its own), once no other paper SELL
of the token is under way: no Insiders API call, no correction, the re-sizes run by a task of their own.

A refused SELL whose re-size could not be made (the count unusable, a storage error) is tried again every
``RESIZE_RETRY_S`` for ``RESIZE_WINDOW_S`` after its refusal; the ones a crash left are found again at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from common.cancel import reraise_if_cancelling
from common.decimals import MIN_HELD_SHARES, fmt
from common.ids import hash_id
from services.executor.adapters.order_store import Change
from services.executor.domain.order_lifecycle import State
from services.executor.domain.paper_selling import NOT_ENOUGH_BALANCE as NOT_ENOUGH
from services.executor.domain.paper_selling import PaperHolding
from services.executor.domain.reconcile import resize_size
from services.executor.domain.sell_sizing import sized_on
from services.executor.domain.ticket import PAPER, Ticket
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)

RESIZED_PREFIX = "co_rs_"  # a SELL re-sized once is never re-sized again
RESIZE_WINDOW_S = 900.0  # a refused SELL is re-sized within this long of its refusal; later, the moment has passed
RESIZE_RETRY_S = 5.0  # a re-size that could not be made is tried again after this long

Count = Callable[[Ticket], Awaitable[Decimal | None]]  # the venue's count of a SELL's token (None: unusable)


class RefusedStore(Protocol):
    """Where the refused SELLs and a position's split are read (:class:`.adapters.reconcile_store.ReconcileStore`)."""

    async def refused_sells(self, window_s: float, venue: str) -> list[tuple[bytes, float]]:
        """The refused SELLs of ``venue`` of the last ``window_s``: Order, seconds since."""

    async def parts(self, follower_wallet_id: str, asset_id: str) -> dict[str, Decimal] | None:
        """Each subscription's shares of the wallet's open position when it keeps a split."""


class Holdings(Protocol):
    """A wallet's PAPER holding (:class:`.adapters.paper_holdings.PaperHoldings`)."""

    async def read(self, wallet_id: str, asset_id: str, sending: Callable[[], None]) -> PaperHolding:
        """The holding."""


@dataclass
class ResizeStats:
    """Counters of the re-sizes."""

    resized: int = 0
    resize_retries: int = 0
    resizes_abandoned: int = 0


@dataclass
class _Refused:
    """A SELL refused for lack of shares, waiting for its re-size."""

    ticket: Ticket
    refused_at: float  # the clock's reading at the refusal
    next_at: float  # the next try


def resized_id(client_order_id: str) -> str:
    """The client order id of a refused SELL's re-sized order."""
    return RESIZED_PREFIX + hash_id("x", client_order_id)[2:32]


def resized_order(original: epb.Order, size: Decimal, now_ns: int) -> epb.Order:
    """A refused SELL again, sized to what the venue holds (a new client order id: the venue keeps the refused
    one's answer under its Idempotency-Key)."""
    order = epb.Order()
    order.CopyFrom(original)
    order.client_order_id = resized_id(original.client_order_id)
    order.size = fmt(size)
    order.sell_fraction = ""
    order.routed_time_ns = now_ns
    return order


def refused_for_lack_of_shares(c: Change) -> bool:
    """A SELL the venue refused for lack of shares, not itself a re-sized one."""
    return (c.life.state is State.REJECTED and c.life.reason == NOT_ENOUGH and not c.ticket.buying
            and not c.ticket.client_order_id.startswith(RESIZED_PREFIX))


async def paper_count(holdings: Holdings, wallet_id: str, asset_id: str) -> Decimal | None:
    """The paper venue's count of a wallet's shares of a token: its booked PAPER position; None (not yet: tried
    again) while a paper SELL of the token is under way, whose fill is not booked yet."""
    holding = await holdings.read(wallet_id, asset_id, lambda: None)
    return None if holding.selling else holding.held


class Resizer:
    """The refused SELLs of one venue and their re-sizes (:meth:`due` run by the owner's loop, or :meth:`run`)."""

    def __init__(self, store: RefusedStore, venue: str, count: Count, *,
                 known: Callable[[list[str]], Awaitable[set[str]]],
                 resubmit: Callable[[epb.Order], Awaitable[Any]] | None,
                 stats: ResizeStats | None = None, wake: asyncio.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, retry_s: float | None = None,
                 window_s: float | None = None) -> None:
        self.store = store
        self.venue = venue
        self.count = count
        self.known = known  # which of these client order ids have an order row (the order store's ``known``)
        self.resubmit = resubmit
        self.stats = stats if stats is not None else ResizeStats()
        self.wake = wake if wake is not None else asyncio.Event()
        self.clock = clock
        self.retry_s = RESIZE_RETRY_S if retry_s is None else retry_s
        self.window_s = RESIZE_WINDOW_S if window_s is None else window_s
        self._refused: list[_Refused] = []
        self.loaded = False

    def observe(self, changes: list[Change]) -> None:
        """Queue this venue's SELLs refused for lack of shares (each re-sized once)."""
        for c in changes:
            if c.ticket.venue == self.venue and refused_for_lack_of_shares(c):
                now = self.clock()
                self._refused.append(_Refused(c.ticket, now, now))
                self.wake.set()

    def next_at(self) -> float | None:
        """When the next try is due (None: nothing waits)."""
        return min(r.next_at for r in self._refused) if self._refused else None

    async def load(self) -> None:
        """The refused SELLs of this venue of the last ``window_s`` that have no re-sized order (a crash came
        between)."""
        rows = await self.store.refused_sells(self.window_s, self.venue)
        orders = [(epb.Order.FromString(proto), age_s) for proto, age_s in rows]
        done = await self.known([resized_id(o.client_order_id) for o, _a in orders]) if orders else set()
        queued = {r.ticket.client_order_id for r in self._refused}
        now = self.clock()
        for o, age_s in orders:
            if resized_id(o.client_order_id) not in done and o.client_order_id not in queued:
                self._refused.append(_Refused(Ticket(o, self.venue, None, 0), now - age_s, now))
        if len(self._refused) > len(queued):
            log.warning("refused SELLs found at start without their re-size: re-sizing them",
                        extra={"orders": len(self._refused) - len(queued), "venue": self.venue})
        self.loaded = True

    async def due(self) -> None:
        """Try the re-sizes that are due; keep the ones that could not be made, until their window is over."""
        now = self.clock()
        for r in [r for r in self._refused if r.next_at <= now]:
            try:
                done = await self.resize(r.ticket)
            except asyncio.CancelledError:
                raise
            except Exception:  # a storage error: tried again like an unusable venue answer
                log.exception("refused SELL not re-sized; trying again", extra={
                    "client_order_id": r.ticket.client_order_id})
                done = False
            now = self.clock()
            if done:
                self._refused.remove(r)
            elif now - r.refused_at >= self.window_s:
                self._refused.remove(r)
                self.stats.resizes_abandoned += 1
                log.error("refused SELL never re-sized: the venue's count stayed unusable", extra={
                    "client_order_id": r.ticket.client_order_id, "window_s": self.window_s})
            else:
                r.next_at = now + self.retry_s
                self.stats.resize_retries += 1

    async def resize(self, t: Ticket) -> bool:
        """Send a SELL refused for lack of shares once more for what the venue counts, a copy of a position that
        keeps a split for no more than its subscription's part (``resize_size``; nothing when that is less than
        the market's minimum). False: not done, the venue's count was unusable."""
        held = await self.count(t)
        if held is None:
            return False
        if self.resubmit is None:
            return True
        o = t.order
        part_of = sized_on(t.origin, o.subscription_id)  # a copy: no more than its subscription's part
        parts = await self.store.parts(o.follower_wallet_id, o.asset_id) if part_of is not None else None
        size = resize_size(Decimal(o.size) if o.size else None, held, parts, part_of)
        minimum = Decimal(o.min_order_size) if o.min_order_size else MIN_HELD_SHARES
        if isinstance(size, tuple) or size < max(minimum, MIN_HELD_SHARES):
            log.warning("refused SELL not re-sized: the venue holds too little", extra={
                "client_order_id": o.client_order_id, "held": fmt(held), "venue": t.venue,
                "reason": size[0] if isinstance(size, tuple) else "SELL_BELOW_MARKET_MINIMUM"})
            return True
        order = resized_order(o, size, time.time_ns())
        await self.resubmit(order)
        self.stats.resized += 1
        log.warning("refused SELL re-sized from the venue's count", extra={
            "client_order_id": o.client_order_id, "resized_as": order.client_order_id, "size": fmt(size),
            "venue": t.venue})
        return True

    async def run(self) -> None:
        """Load the refused SELLs a crash left, then run the re-sizes as they fall due (a venue with no rounds of
        its own: PAPER)."""
        while True:
            self.wake.clear()  # before the tries: a refusal observed during them wakes the wait below
            wait = 1.0
            try:
                if not self.loaded:
                    await self.load()
                await self.due()
                nxt = self.next_at()
                wait = 3600.0 if nxt is None else nxt - self.clock()
            except asyncio.CancelledError:
                raise
            except Exception:  # a storage outage at start: tried again
                reraise_if_cancelling()
                log.exception("re-sizes of refused SELLs failed", extra={"venue": self.venue})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(0.01, wait))


def paper_resizer(store: RefusedStore, holdings: Holdings, *, known: Callable[[list[str]], Awaitable[set[str]]],
                  resubmit: Callable[[epb.Order], Awaitable[Any]]) -> Resizer:
    """The re-sizes of PAPER SELLs refused for lack of shares, on the wallet's booked PAPER position."""
    async def count(t: Ticket) -> Decimal | None:
        return await paper_count(holdings, t.order.follower_wallet_id, t.order.asset_id)

    return Resizer(store, PAPER, count, known=known, resubmit=resubmit)
