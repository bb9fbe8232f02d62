"""The SELLs of fires whose record failed, counted on their position by the process that sent them until the
executor has them: answered, refused, their order seen, or too old for the executor to take."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from services.guard.fire_bookkeeping import UnrecordedSells
from services.guard.ports import SubmitRejected

POSITION = ("w_1", "asset_1")
MINUTE_NS = 60_000_000_000


def _call() -> asyncio.Future[object]:
    return asyncio.get_running_loop().create_future()


def _counted(sells: UnrecordedSells, now_ns: int = 0) -> Decimal:
    return sells.shares(POSITION, besides="trg_sl", now_ns=now_ns)


async def test_an_unrecorded_sell_counts_until_answered_and_never_for_its_own_trigger() -> None:
    sells = UnrecordedSells(MINUTE_NS)
    first, again = _call(), _call()
    sells.add(POSITION, "trg_tp", Decimal(50), first, order_id="co_1", sent_ns=0)
    sells.add(POSITION, "trg_tp", Decimal(40), again, order_id="co_1", sent_ns=1)  # fired again: the newer counts
    first.set_result(None)
    await asyncio.sleep(0)
    assert (_counted(sells), sells.shares(POSITION, besides="trg_tp", now_ns=0),
            sells.shares(("w_1", "asset_2"), besides="trg_sl", now_ns=0)) == (Decimal(40), Decimal(0), Decimal(0))
    again.set_result(None)
    await asyncio.sleep(0)
    assert _counted(sells) == Decimal(0) and len(sells) == 0


async def test_a_refused_sell_stops_counting() -> None:
    sells, call = UnrecordedSells(MINUTE_NS), _call()
    sells.add(POSITION, "trg_tp", Decimal(50), call, order_id="co_1", sent_ns=0)
    call.set_exception(SubmitRejected("NOTHING_HELD", "no shares"))
    await asyncio.sleep(0)
    assert _counted(sells) == Decimal(0) and sells.unanswered == 0


async def test_a_sell_whose_call_failed_counts_until_its_order_is_seen() -> None:
    sells, call = UnrecordedSells(MINUTE_NS), _call()
    sells.add(POSITION, "trg_tp", Decimal(50), call, order_id="co_1", sent_ns=0)
    call.set_exception(TimeoutError("deadline exceeded"))
    await asyncio.sleep(0)
    assert (_counted(sells), sells.unanswered, sells.unseen("asset_1"), sells.unseen("asset_2")) == (
        Decimal(50), 1, ["co_1"], [])
    sells.seen(["co_other"])
    assert _counted(sells) == Decimal(50)
    sells.seen(["co_1"])
    assert _counted(sells) == Decimal(0) and sells.unseen("asset_1") == []


async def test_a_sell_whose_call_failed_counts_no_longer_than_the_executor_could_take_it() -> None:
    sells, call = UnrecordedSells(MINUTE_NS), _call()
    sells.add(POSITION, "trg_tp", Decimal(50), call, order_id="co_1", sent_ns=1_000)
    call.cancel()  # no answer either
    await asyncio.sleep(0)
    assert _counted(sells, now_ns=1_000 + MINUTE_NS) == Decimal(50)
    assert _counted(sells, now_ns=1_001 + MINUTE_NS) == Decimal(0) and len(sells) == 0


async def test_a_sell_whose_trigger_fired_again_and_was_recorded_is_counted_by_its_row() -> None:
    sells, call = UnrecordedSells(MINUTE_NS), _call()
    sells.add(POSITION, "trg_tp", Decimal(50), call, order_id="co_1", sent_ns=0)
    call.set_exception(TimeoutError("deadline exceeded"))
    await asyncio.sleep(0)
    sells.forget("trg_other")
    assert _counted(sells) == Decimal(50)
    sells.forget("trg_tp")
    assert _counted(sells) == Decimal(0)
