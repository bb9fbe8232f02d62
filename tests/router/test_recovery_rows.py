"""A trade appended before a crash that left its rows unwritten is delivered again with different content (a
feed's correction under the same id): its rows are written from the log, the trade as routed included, so the
leader's recorded position moves by what the logged orders were sized on."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.router.adapters.redis_state import BatchView
from services.router.adapters.store import PgBatch
from services.router.metrics import RouterMetrics
from services.router.router import Knobs, Router
from tests.router.conftest import leader_trade
from tradingtools.execution.v1 import execution_pb2 as epb


class _Followers:
    async def followers_of(self, leader: str) -> tuple[()]:
        return ()


class _Redis:
    async def read_batch(self, ids: Any, assets: Any, queries: Any, **kw: Any) -> BatchView:
        return BatchView(markers={i: "5-0" for i in ids}, markets={}, has_book={}, reserved={})


class _Store:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def load_batch(self, **kw: Any) -> PgBatch:
        return PgBatch()

    async def persist(self, row: Any) -> bool:
        self.rows.append(row)
        return True


class _Emitter:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    async def appended_payload(self, cursor: str) -> bytes | None:
        return self.payload if cursor == "5-0" else None


class _TrimmedLog:
    async def appended_payload(self, cursor: str) -> bytes | None:
        return None  # the entry at the marker's cursor is no longer in the log


async def test_rows_written_from_the_log_take_the_trade_as_routed() -> None:
    original = leader_trade("lt_c", size="100")  # what was routed and appended before the crash
    corrected = leader_trade("lt_c", size="250")  # what is delivered again
    payload = epb.RoutedTrade(trade=original).SerializeToString()
    store = _Store()
    router = Router(followers=_Followers(), redis_state=_Redis(), store=store, markets=None,  # type: ignore[arg-type]
                    balances=None, emitter=_Emitter(payload), knobs=Knobs(),  # type: ignore[arg-type]
                    metrics=RouterMetrics())
    await router.handle_batch([corrected])
    [row] = store.rows
    assert row.payload == payload
    # the leader position must move by what was routed (100), as the orders in the log were sized on it
    assert row.leader_delta == Decimal(100), f"leader_delta {row.leader_delta} from the redelivered event"


async def test_rows_of_a_trade_whose_log_entry_is_gone_are_written_from_the_trade_as_delivered() -> None:
    """The rows waited longer than the log keeps an entry its readers have read (PostgreSQL down for a quarter of
    an hour between the emit and the persist): the executor has the orders, and the rows are still written, from
    the trade as delivered and without orders, so that the leader's recorded position moves by it."""
    delivered = leader_trade("lt_gone", size="100")
    store = _Store()
    router = Router(followers=_Followers(), redis_state=_Redis(), store=store, markets=None,  # type: ignore[arg-type]
                    balances=None, emitter=_TrimmedLog(), knobs=Knobs(),  # type: ignore[arg-type]
                    metrics=RouterMetrics())
    await router.handle_batch([delivered])
    [row] = store.rows
    assert (row.leader_trade_id, row.leader_delta, row.orders, row.appended_cursor) == (
        "lt_gone", Decimal(100), 0, "5-0")
    assert epb.RoutedTrade.FromString(row.payload) == epb.RoutedTrade(trade=delivered)

