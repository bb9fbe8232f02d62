"""A journal batch takes its positions before any ``subscription_stats`` row, as every other writer of both does.

Reconciliation locks a wallet's positions (its corrections, then the count of those that agree, an order of
theirs in flight or not), then the stats of the subscriptions its corrections moved. The journal counted a batch's
skips (their stats rows) before booking its fills (their positions), and a batch cut by ``lives_apart`` upserted its
first part's stats before locking its second part's positions: either one, meeting a reconciliation of the wallet
the other way round, deadlocked (40P01), PostgreSQL aborting one of them after a second's wait (the journal retries
its batch, a second late; a reconciliation round fails and its wallet is asked again). Each reconciliation is held
after its positions by a third transaction holding the stats row it takes first (``sub_0``).

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from services.executor.adapters.order_store import Change, OrderStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.settlement import Resolution
from services.executor.domain.ticket import Ticket
from tests.executor.conftest import ASSET, CONDITION, rows
from tests.executor.test_lock_order_reconcile import V, X, Y, Z, _cut, _reconcile
from tests.executor.test_lock_order_stats import NO, Fill, _book_on, _buy, _connect, executor_pool
from tests.lock_race import race_at_gate
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
__all__ = ["executor_pool"]


def _sell(wallet: str, sub: str, asset: str) -> Fill:
    """A SELL of the 10 shares :func:`_buy` buys, at 0.5."""
    t, b = _buy(wallet, sub, asset)
    order = epb.Order()
    order.CopyFrom(t.order)
    order.side = cpb.SIDE_SELL
    return Ticket(order, t.venue, None, t.created_ns), b


def _filled(fill: Fill) -> Change:
    t, b = fill
    return Change(t, OrderLife(t.client_order_id, State.FILLED, filled_size=b.size, avg_price=b.price), None, b)


def _skipped(fill: Fill) -> Change:
    """A copy of ``fill``'s order declined as a skip (nothing to book)."""
    t, _ = fill
    return Change(t, OrderLife(t.client_order_id, State.REJECTED, reason="NO_BOOK"))


async def _journal_race(db_url: str, pool: AsyncConnectionPool[Any], batch: list[Change]) -> list[str]:
    """A reconciliation of w_1 (Y and V cut to 6 shares, X agreeing) held by a transaction holding sub_0's stats
    row, the journal's ``batch`` written while it waits, then the gate let go; the SQLSTATE each one ended with
    (reconciliation, journal; "" for none)."""
    gate = "SELECT 1 FROM subscription_stats WHERE subscription_id = 'sub_0' FOR UPDATE"
    return await race_at_gate(db_url, gate, lambda: _reconcile(pool, [_cut(Y), _cut(V)], [X]),
                              lambda: OrderStore(pool).apply([], batch))


async def _hold(db_url: str) -> None:
    """w_1 holds X and V for sub_a, Y for sub_0, 10 shares each at 0.5."""
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy("w_1", "sub_a", X), _buy("w_1", "sub_0", Y), _buy("w_1", "sub_a", V)])


async def test_a_batch_counts_its_skips_after_locking_its_positions(
        db_url: str, executor_pool: AsyncConnectionPool[Any]) -> None:
    await _hold(db_url)
    # a copy of sub_a declined as a skip and a BUY of X filled, in one batch
    outcome = await _journal_race(db_url, executor_pool,
                                  [_skipped(_buy("w_1", "sub_a", X)), _filled(_buy("w_1", "sub_a", X))])
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT subscription_id, copied, skipped, exposure_usd FROM subscription_stats ORDER BY 1") == [
        ("sub_0", 1, 0, D(3)), ("sub_a", 3, 1, D(13))]
    assert rows(db_url, "SELECT asset_id, size FROM positions ORDER BY 1") == [(X, D(20)), (Y, D(6)), (V, D(6))]


async def test_a_batch_of_two_lives_locks_every_position_before_the_stats(
        db_url: str, executor_pool: AsyncConnectionPool[Any]) -> None:
    await _hold(db_url)
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy("w_1", "sub_a", Z)])
    # Z sold and bought again cuts the batch in two: X's BUY is booked in the second part, after the first's stats
    batch = [_filled(_sell("w_1", "sub_a", Z)), _filled(_buy("w_1", "sub_a", Z)), _filled(_buy("w_1", "sub_a", X))]
    outcome = await _journal_race(db_url, executor_pool, batch)
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT subscription_id, copied, exposure_usd FROM subscription_stats ORDER BY 1") == [
        ("sub_0", 1, D(3)), ("sub_a", 6, D(18))]
    assert rows(db_url, "SELECT asset_id, size FROM positions ORDER BY 1") == [
        (X, D(20)), (Y, D(6)), (V, D(6)), (Z, D(10))]


async def test_a_batch_takes_the_stats_of_its_fills_and_skips_in_one_key_order(
        db_url: str, executor_pool: AsyncConnectionPool[Any]) -> None:
    # w_1 (sub_a) and w_3 (sub_c) hold ASSET, whose market settles, and w_1 X; the batch books w_1's BUY of X and
    # counts a copy of sub_c declined: the skips' row was taken first, then the fills' after their positions
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy("w_1", "sub_a", ASSET), _buy("w_3", "sub_c", ASSET), _buy("w_1", "sub_a", X)])
    settlement = SettlementStore(executor_pool)
    batch = [_skipped(_buy("w_3", "sub_c", X)), _filled(_buy("w_1", "sub_a", X))]
    outcome = await race_at_gate(db_url, f"SELECT 1 FROM positions WHERE asset_id = '{X}' FOR UPDATE",
                                 lambda: OrderStore(executor_pool).apply([], batch),
                                 lambda: settlement.settle(Resolution(CONDITION, (ASSET, NO), ASSET)))
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT subscription_id, copied, skipped, exposure_usd, realized_pnl_usd"
                        " FROM subscription_stats ORDER BY 1") == [
        ("sub_a", 3, 0, D(10), D(5)), ("sub_c", 1, 1, D(0), D(5))]
