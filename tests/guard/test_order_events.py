"""Order events of trigger SELLs in process: which ones reach PostgreSQL (a fake store records the calls)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.guard.coordinator import Clients, Guard, Stores
from services.guard.domain.exit_plans import ExitsChange
from services.guard.domain.trigger_model import Move, State
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb


class _Row:
    def __init__(self, tid: str, state: State) -> None:
        self.id = tid
        self.state = state


class _Store:
    def __init__(self, row: _Row | None = None) -> None:
        self.row = row
        self.calls: list[tuple[Any, ...]] = []

    async def mark_submitted(self, *_a: Any) -> None:
        return None

    async def find_by_order(self, trigger_id: str, order_id: str) -> _Row | None:
        self.calls.append(("find", trigger_id, order_id))
        return self.row

    async def settle(self, trigger_id: str, order_id: str, move: Move | None, reason: str, filled: Decimal,
                     avg: Decimal) -> _Row | None:
        self.calls.append(("settle", trigger_id, order_id, move, filled))
        return self.settled

    settled: _Row | None = None


class _Exits:
    async def on_sell_fill(self, *_a: Any) -> Any:
        return ExitsChange("OPEN")


class _Kick:
    def kick(self) -> None:
        return None


def _guard(store: _Store) -> Guard:
    return Guard(Stores(triggers=store, exits=_Exits()),  # type: ignore[arg-type]
                 Clients(executor=None, markets=None, outbox=_Kick(), watch=_Kick()))  # type: ignore[arg-type]


def _ev(kind: int, *, trigger_id: str = "trg_1", filled: str = "0") -> epb.OrderEvent:
    return epb.OrderEvent(type=kind, origin=epb.ORDER_ORIGIN_TRIGGER, trigger_id=trigger_id,  # type: ignore[arg-type]
                          client_order_id="co_1", side=cpb.SIDE_SELL, filled_size=filled, avg_price="0.5")


@pytest.mark.parametrize(("event", "calls"), [
    (_ev(epb.ORDER_EVENT_TYPE_PLACED), []),  # nothing moved, nothing filled: no round trip at all
    (_ev(epb.ORDER_EVENT_TYPE_FILLED, filled="10"), [("settle", "trg_1", "co_1", Move.FILL, Decimal(10))]),
    (_ev(epb.ORDER_EVENT_TYPE_REJECTED), [("settle", "trg_1", "co_1", Move.FAIL, Decimal(0))]),
])
async def test_trigger_sell_events_settle_directly_and_empty_ones_are_not_written(
        event: epb.OrderEvent, calls: list[tuple[Any, ...]]) -> None:
    store = _Store()
    await _guard(store).on_order_event(event)
    assert store.calls == calls


async def test_a_partial_fill_without_a_move_still_records_the_fill() -> None:
    store = _Store()
    await _guard(store).on_order_event(_ev(epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED, filled="4"))
    assert store.calls == [("settle", "trg_1", "co_1", None, Decimal(4))]


@pytest.mark.parametrize(("row", "settled"), [(_Row("trg_9", State.FIRED), True), (_Row("trg_9", State.DONE), False),
                                              (None, False)])
async def test_an_event_without_a_trigger_id_is_looked_up_by_order(row: _Row | None, settled: bool) -> None:
    store = _Store(row)
    ev = _ev(epb.ORDER_EVENT_TYPE_FILLED, trigger_id="", filled="10")
    await _guard(store).on_order_event(ev)
    assert store.calls[0] == ("find", "", "co_1")
    assert (("settle", "trg_9", "co_1", Move.FILL, Decimal(10)) in store.calls) is settled


async def test_an_event_handled_once_is_skipped_when_it_comes_again_unless_it_failed() -> None:
    store = _Store()
    guard = _guard(store)
    ev = _ev(epb.ORDER_EVENT_TYPE_FILLED, filled="10")
    ev.event_id = "oev_1"
    await guard.on_order_event(ev)  # from the executor's answer
    await guard.on_order_event(ev)  # the same event from the order event stream
    assert [c[0] for c in store.calls] == ["settle"] and guard.stats.repeated_events == 1

    failing = _Store()
    guard = _guard(failing)

    async def down(*_a: Any) -> None:
        raise ConnectionError("postgres down")

    failing.settle = down  # type: ignore[method-assign,assignment]
    with pytest.raises(ConnectionError):
        await guard.on_order_event(ev)
    failing.settle = _Store.settle.__get__(failing)  # type: ignore[method-assign]
    await guard.on_order_event(ev)  # redelivered: handled this time
    assert [c[0] for c in failing.calls] == ["settle"]


@pytest.mark.parametrize(("settled", "kept"), [(_Row("trg_1", State.DONE), False), (None, True)])
async def test_a_settled_sell_needs_no_separate_acknowledged_mark(settled: _Row | None, kept: bool) -> None:
    store = _Store()
    store.settled = settled
    guard = _guard(store)
    guard.firer.submitted.pending["trg_1"] = "co_1"  # acknowledged, mark not written yet
    guard.firer.submitted.pending["trg_2"] = "co_9"
    await guard.on_order_event(_ev(epb.ORDER_EVENT_TYPE_FILLED, filled="10"))
    # the settle wrote submitted_at along with DONE; a settle that changed nothing leaves the mark queued
    assert guard.firer.submitted.pending == ({"trg_1": "co_1", "trg_2": "co_9"} if kept else {"trg_2": "co_9"})
