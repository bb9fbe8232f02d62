"""Order events → trigger SELLs settled (DONE / FAILED), copy exits registered, resized or cancelled.

Events come one by one (the executor's answer to a SELL) or in batches (the order-event consumer); a
batch leaves the rows handling its events one by one leaves, with fewer round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from common.decimals import ZERO
from services.guard.domain import sell_orders
from services.guard.domain.exit_plans import CopyFill, ExitsChange
from services.guard.domain.trigger_model import State
from services.guard.loops import Batches, reraise_if_cancelled
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

if TYPE_CHECKING:
    from services.guard.coordinator import Guard

log = logging.getLogger(__name__)
_HANDLED_EVENTS_KEPT = 10_000


class OrderFlow:
    """Applies order events to PostgreSQL and the guard's engine."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._handled_events: dict[str, None] = {}  # ids of order events handled to the end, oldest first

    async def on_event(self, ev: epb.OrderEvent) -> None:
        """Settle trigger SELLs, register / resize / cancel copy exits.

        An event already handled to the end (the executor's answer carries the last event, which the order
        event stream then delivers again) is skipped: handling is idempotent, so this only saves the work.
        """
        if ev.event_id and ev.event_id in self._handled_events:
            self.guard.stats.repeated_events += 1
            return
        await self._order_event(ev)
        self._handled(ev)

    async def on_events(self, events: list[epb.OrderEvent], *, answered: bool = False) -> None:
        """A batch of order events (stream order), with the results of :meth:`on_event` one by one.

        ``answered``: the events came with the executor's answers to SELLs and are applied even when handled
        before. A SELL sent by a fire that was not recorded (guard died, or the commit failed) has its events
        handled while the row is still ARMED, which changes nothing; the next fire of that row reuses the
        client order id, and the executor's answer (duplicate, with that same last event) is then what
        settles it.

        Consecutive copy BUY fills go through :meth:`ExitStore.on_buy_fills_quick` together; consecutive
        events of trigger SELLs settle in one transaction (:meth:`TriggerStore.settle_many`); an event that
        changes nothing (a copy order placed) costs no round trip; anything else is handled on its own, after
        what gathered before it. Safe to re-run item by item after a failure part-way (every step is
        idempotent, and an event counts as handled only once its step is done).
        """
        run: list[epb.OrderEvent] = []  # consecutive events handled together
        run_kind = ""  # what ``run`` holds: "fills" (copy BUY fills) or "sells" (events of trigger SELLs)
        gathered: set[str] = set()  # event ids gathered since the last event handled alone
        for ev in events:
            if ev.event_id and ((not answered and ev.event_id in self._handled_events) or ev.event_id in gathered):
                self.guard.stats.repeated_events += 1
                continue
            copy = ev.origin == epb.ORDER_ORIGIN_COPY and not ev.trigger_id
            copy_buy_fill = ev.origin == epb.ORDER_ORIGIN_COPY and ev.side == cpb.SIDE_BUY and sell_orders.is_fill(ev)
            if ev.trigger_id and not copy_buy_fill:
                kind = "sells"
            elif copy and not sell_orders.is_fill(ev):
                self.guard.stats.order_events += 1  # a copy order that moved no shares: nothing to change
                self._handled(ev)
                continue
            elif copy and copy_buy_fill:
                kind = "fills"
            else:
                kind = ""  # handled alone
            if run and kind != run_kind:
                await self._run(run_kind, run)
                run = []
            if kind:
                run_kind = kind
                run.append(ev)
                gathered.add(ev.event_id)
                continue
            gathered = set()
            await self.on_event(ev)
        if run:
            await self._run(run_kind, run)

    async def _run(self, kind: str, events: list[epb.OrderEvent]) -> None:
        await (self._copy_buy_fills(events) if kind == "fills" else self._trigger_events(events))

    async def _copy_buy_fills(self, events: list[epb.OrderEvent]) -> None:
        quick = await self.guard.exit_store.on_buy_fills_quick([_copy_fill(ev) for ev in events])
        for ev, change in zip(events, quick, strict=True):
            if change is None:  # needs the full path (exits to plan, ...): one by one, in order
                await self.on_event(ev)
            else:
                self.guard.stats.order_events += 1
                self._handled(ev)

    async def _trigger_events(self, events: list[epb.OrderEvent]) -> None:
        """Events of trigger SELLs (each with its trigger id): every settle in one transaction, then each
        SELL fill's exits (a settle and a position's exits touch different rows: the order between them
        does not matter)."""
        settling: list[epb.OrderEvent] = []
        items = []
        for ev in events:
            self.guard.stats.order_events += 1
            await self.guard.firer.recorded(ev.trigger_id)  # the SELL goes out before its FIRED row commits
            oc = sell_orders.outcome(ev)
            if oc.move is not None or oc.filled_size > 0:  # an event with no move and no fill changes nothing
                settling.append(ev)
                items.append((ev.trigger_id, ev.client_order_id, oc.move, oc.reason, oc.filled_size, oc.avg_price))
        for ev, settled in zip(settling, await self.guard.store.settle_many(items), strict=True):
            if settled is not None:  # submitted_at recorded with it
                self.guard.firer.submitted.discard(ev.trigger_id, ev.client_order_id)
        for ev in events:
            if sell_orders.is_fill(ev) and ev.side == cpb.SIDE_SELL:
                await self._sell_filled(ev)
            self._handled(ev)
        self.guard.outbox.kick()
        self.guard.watch.kick()

    async def _sell_filled(self, ev: epb.OrderEvent) -> None:
        """A SELL's fill: the position's exits are cancelled when it is gone, renewed when shares are left that
        no exit guards any more (the closing exit's SELL sold only part, or shares were bought meanwhile)."""
        guard = self.guard
        change = await guard.exit_store.on_sell_fill(ev.follower_wallet_id, ev.asset_id)
        if change.outcome == "EXITS_USED":
            market = await guard.markets.market(ev.asset_id)
            change = await guard.exit_store.renew_used(ev.follower_wallet_id, ev.asset_id,
                                                       market.tick_size if market else ZERO)
        await self._watch(change)
        guard.stats.exits_cancelled += len(change.cancelled)
        guard.stats.exits_created += len(change.created)

    async def _watch(self, change: ExitsChange) -> None:
        """The engine after a change of a position's exits: the cancelled ones dropped, the created ones armed, and
        the group's ARMED ones it lacks read and armed (another guard made them and died before announcing them,
        or this one did and lost the commit's answer: the event is handled again and finds them made)."""
        guard = self.guard
        for row in change.cancelled:
            guard.engine.remove(row.id)
        for row in change.created:
            guard.engine.upsert(row.spec(), armed_ns=guard.clock_ns())
            guard.changed(row.asset_id)
        unwatched = [tid for tid in change.armed if tid not in guard.engine]
        if unwatched:
            await guard.changes.reload_many(unwatched)  # those a fire has under way are left to it

    def _handled(self, ev: epb.OrderEvent) -> None:
        if ev.event_id:
            self._handled_events[ev.event_id] = None
            if len(self._handled_events) > _HANDLED_EVENTS_KEPT:
                del self._handled_events[next(iter(self._handled_events))]

    async def _order_event(self, ev: epb.OrderEvent) -> None:
        self.guard.stats.order_events += 1
        if ev.origin == epb.ORDER_ORIGIN_TRIGGER or ev.trigger_id:
            await self.guard.firer.recorded(ev.trigger_id)  # the SELL goes out before its FIRED row commits
            oc = sell_orders.outcome(ev)
            if oc.move is not None or oc.filled_size > 0:  # an event with no move and no fill changes nothing
                trigger_id = ev.trigger_id
                if not trigger_id:
                    row = await self.guard.store.find_by_order("", ev.client_order_id)
                    trigger_id = row.id if row is not None and row.state is State.FIRED else ""
                if trigger_id:  # settle changes the row only while it is FIRED with this order
                    settled = await self.guard.store.settle(trigger_id, ev.client_order_id, oc.move, oc.reason,
                                                      oc.filled_size, oc.avg_price)
                    if settled is not None:  # submitted_at recorded with it
                        self.guard.firer.submitted.discard(trigger_id, ev.client_order_id)
        if sell_orders.is_fill(ev) and ev.side == cpb.SIDE_BUY and ev.origin == epb.ORDER_ORIGIN_COPY:
            market = await self.guard.markets.market(ev.asset_id)
            change = await self.guard.exit_store.on_buy_fill(_copy_fill(ev), market.tick_size if market else ZERO)
            await self._watch(change)  # cancelled: the exits of a previous opening of the position
            self.guard.stats.exits_created += len(change.created)
            if change.created:
                log.info("copy exits registered", extra={"asset_id": ev.asset_id, "count": len(change.created),
                                                         "skipped": list(change.skipped)})
        if sell_orders.is_fill(ev) and ev.side == cpb.SIDE_SELL:
            await self._sell_filled(ev)
        self.guard.outbox.kick()
        self.guard.watch.kick()


class Answers(Batches[epb.OrderEvent]):
    """Order events carried by the executor's answers to SELLs, handled in batches.

    A fire's SELL is settled from the answer's last event without waiting for the order-event stream,
    but in a batch with the answers that came in meanwhile (one transaction for all of them rather than
    one per fire). A batch that fails is only logged: the durable order-event stream delivers the same
    events again, and handling them is idempotent.
    """

    def __init__(self, handle_batch: Callable[[list[epb.OrderEvent]], Awaitable[None]],
                 spawn: Callable[[Coroutine[Any, Any, Any]], None], *, gather_s: float = 0.0) -> None:
        super().__init__(self._settle, spawn, gather_s=gather_s)
        self.handle_batch = handle_batch
        self.failed_batches = 0

    async def _settle(self, batch: list[epb.OrderEvent]) -> None:
        try:
            await self.handle_batch(batch)
        except Exception as exc:  # noqa: BLE001 - the order-event stream brings them again
            reraise_if_cancelled()
            self.failed_batches += 1
            log.warning("answered order events not handled; the order-event stream will bring them",
                        extra={"events": len(batch), "error": repr(exc)[:300]})


def _copy_fill(ev: epb.OrderEvent) -> CopyFill:
    return CopyFill(follower_wallet_id=ev.follower_wallet_id, wallet=ev.follower_proxy, asset_id=ev.asset_id,
                    subscription_id=ev.subscription_id, client_order_id=ev.client_order_id,
                    filled_size=_dec(ev.filled_size), avg_price=_dec(ev.avg_price))


def _dec(raw: str) -> Decimal:
    try:
        return Decimal(raw) if raw else ZERO
    except ArithmeticError:
        return ZERO

