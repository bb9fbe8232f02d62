"""Orders of a follower wallet on an asset not final yet, in arrival order.

A SELL the executor sizes itself (``sell_fraction``) must see the position its wallet's earlier orders
on the asset leave: it waits its turn here until every one of them is final (fills are booked when the
venue confirms them), at most ``MAX_WAIT_S`` (a resting order may never end).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from services.executor import lifecycle as lc
from services.executor.model import Ticket

if TYPE_CHECKING:
    from services.executor.intake import Prepared

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (follower wallet id, asset id)
MAX_WAIT_S = 120.0
# Sizes a SELL sent with a fraction of the position once its turn came: the sized order, ready for the venue
# (its intent row updated), or refused with the reason.
SizeLater = Callable[[Ticket], Awaitable["Prepared"]]


def position_key(t: Ticket) -> Key:
    """The position an order trades: (follower wallet id, asset id)."""
    return t.order.follower_wallet_id, t.order.asset_id


def sized_later(t: Ticket, life: lc.OrderLife) -> bool:
    """True for a SELL sent with ``sell_fraction`` that is not sized yet (the executor sizes it in its turn)."""
    return life.state is lc.State.NEW and t.request is None and bool(t.order.sell_fraction)


class PositionQueue:
    """Orders not final yet per (wallet, asset), each with its arrival number."""

    def __init__(self) -> None:
        self._open: dict[Key, dict[str, int]] = {}
        self._changed: dict[Key, asyncio.Event] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(len(v) for v in self._open.values())

    def opened(self, key: Key, client_order_id: str) -> None:
        """An order of the position is under way (a second call keeps its place)."""
        self._open.setdefault(key, {}).setdefault(client_order_id, next(self._seq))

    def ended(self, key: Key, client_order_id: str) -> None:
        """The order is final (or no longer run here): later orders of the position may go."""
        orders = self._open.get(key)
        if orders is None or orders.pop(client_order_id, None) is None:
            return
        if not orders:
            del self._open[key]
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    def ahead(self, key: Key, client_order_id: str) -> int:
        """How many orders of the position that arrived before this one are not final yet."""
        orders = self._open.get(key, {})
        mine = orders.get(client_order_id)
        return sum(1 for seq in orders.values() if mine is None or seq < mine)

    async def wait_turn(self, key: Key, client_order_id: str, max_wait_s: float = MAX_WAIT_S) -> bool:
        """Wait until every order of the position that arrived before this one is final; False when
        ``max_wait_s`` ran out first."""
        try:
            async with asyncio.timeout(max_wait_s):
                while self.ahead(key, client_order_id):
                    event = self._changed.get(key)
                    if event is None:
                        event = self._changed[key] = asyncio.Event()
                    await event.wait()
        except TimeoutError:
            log.warning("sizing a SELL before the orders ahead of it are final",
                        extra={"client_order_id": client_order_id, "ahead": self.ahead(key, client_order_id),
                               "waited_s": max_wait_s})
            return False
        return True


async def size_in_turn(queue: PositionQueue, t: Ticket, size_later: SizeLater) -> Prepared:
    """Wait until the orders of ``t``'s position that arrived before it are final, then size it (retried
    until sizing works: PostgreSQL may be away for a while)."""
    await queue.wait_turn(position_key(t), t.client_order_id)
    delay_s = 0.1
    while True:
        try:
            return await size_later(t)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sizing a SELL by its fraction failed; retrying",
                          extra={"client_order_id": t.client_order_id})
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)
