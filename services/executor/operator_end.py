"""Ends by hand an order the venue keeps answering implausibly for (EndOrder): without it such an order waits UNKNOWN
(or PLACED) for good, asked about every second, holding its reservation and an open-order slot.

The order is taken from whatever runs it here (its runner task cancelled, or its status queries stopped), the journal
drained, and its stored row read again: that row, not what the runner held, is what the operator's statement ends,
through the runner's one transition (the lifecycle's ``apply``, the fill booked as a venue answer of that fill would
be, the events written and streamed like any other). Refused after the take-over (the order moved on meanwhile), the
order is run again. One call at a time; only while this process holds the lease.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry import metrics

from common.decimals import fmt
from services.executor.adapters.order_store import OrderStore, row_life, ticket_from_row
from services.executor.domain.operator_statement import Statement, UnknownOrder, answer, check, ended
from services.executor.order_runner import OrderRunner
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)
_ENDED = metrics.get_meter("tradingtools.executor").create_counter(
    "executor.orders_ended_by_hand", description="Orders an operator ended with what they read at the venue "
                                                 "(EndOrder), by venue and outcome")
LEASE_WAIT_S = 3.0  # a held lease is confirmed every second or so


class NotLeaseHolder(Exception):
    """This process may no longer hold the executor lease: another executor is the one to ask."""


class OperatorEnd:
    """Ends orders by hand for :meth:`.servicer.ExecutorServicer.EndOrder`."""

    def __init__(self, runner: OrderRunner, store: OrderStore, *, lease_wait_s: float = LEASE_WAIT_S) -> None:
        self.runner = runner
        self.store = store
        self.lease_wait_s = lease_wait_s
        self._one = asyncio.Lock()

    async def end(self, client_order_id: str, st: Statement) -> epb.OrderEvent:
        """End the order as ``st`` says; its last event. Raises UnknownOrder, NotEndable, ValueError, NotLeaseHolder."""
        if not client_order_id:
            raise ValueError("client_order_id: required")
        try:
            await asyncio.wait_for(self.runner.lease_confirmed(), self.lease_wait_s)
        except TimeoutError:
            raise NotLeaseHolder("this executor may no longer hold the lease: ask the active one") from None
        # shielded: a caller that goes away must not leave the order taken from its runner and not ended
        return await asyncio.shield(self._one_at_a_time(client_order_id, st))

    async def _one_at_a_time(self, coid: str, st: Statement) -> epb.OrderEvent:
        async with self._one:
            row = await self.store.order_row(coid)
            if row is None:
                raise UnknownOrder(f"no order {coid}")
            check(row_life(row), ticket_from_row(row).request, st)  # refused before anything is stopped
            return await self._take_over(coid, st)

    async def _take_over(self, coid: str, st: Statement) -> epb.OrderEvent:
        # a resume holding the order read its row before this end: it starts the order (stopped below) or leaves it
        await self.runner.resuming.released(coid)
        self.runner.ending.add(coid)  # from here to its end, nothing resumes it (a duplicate SubmitOrder, a sweep)
        try:
            await self._stop(coid)
            await self.runner.journal.write([], urgent=True)  # what its runner had queued is written first
            row = await self.store.order_row(coid)
            assert row is not None, "an order row is never deleted"
            life, t = row_life(row), ticket_from_row(row)
            check(life, t.request, st)
            marked, events = ended(life, st)
            await self.runner.transition(t, marked, events, answer(life, st))
        except BaseException:
            self.runner.ending.discard(coid)
            await self._run_again(coid)
            raise
        finally:
            self.runner.ending.discard(coid)
        log.warning("order ended by hand", extra={
            "client_order_id": coid, "outcome": st.outcome.value, "reason": st.reason, "was": life.state.value,
            "filled_size": fmt(st.filled_size), "avg_price": fmt(st.avg_price), "venue": t.venue})
        _ENDED.add(1, {"venue": t.venue, "outcome": st.outcome.value})
        last = await self.store.last_event(coid)
        return last if last is not None else epb.OrderEvent()

    async def _stop(self, coid: str) -> None:
        """Nothing here runs or queries the order once this returns (a write it queued may still be in the journal)."""
        task = self.runner.tasks.get(coid)
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await self.runner.tracker.discard(coid)

    async def _run_again(self, coid: str) -> None:
        """Hand the order back (it resumes from its stored row; a final one is left alone)."""
        try:
            await self.runner.resume(await self.store.open_among([coid]))
        except Exception:  # the given-up sweep takes it up again
            log.exception("order not run again after a refused end by hand", extra={"client_order_id": coid})
            if self.runner.on_give_up is not None:
                self.runner.on_give_up(coid)

