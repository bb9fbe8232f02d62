"""Reconciliation takes the row of a new EXTERNAL position in its wallet's key order, with the positions it locks, so
a booking of that token with others of the wallet does not deadlock with it.

It locked the positions it had rows for first, and inserted the EXTERNAL one (a token the venue holds that the
wallet had no row for) later: a booking inserting that token, then waiting for a locked one of higher key, met the
reconciliation's insert waiting for the booking's (40P01): PostgreSQL aborted one after a second's wait (the journal
retries its batch, or a reconciliation round fails and its wallet is asked again). The race is held at a chosen
point by a third transaction holding a row.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from services.executor.adapters.reconcile_store import ReconcileStore
from services.executor.domain.reconcile import EXTERNAL, AtVenue, Correction
from tests.executor.conftest import CONDITION, rows
from tests.executor.test_lock_order_reconcile import W, X, Y, Z, _cut
from tests.executor.test_lock_order_stats import _book_on, _buy, _connect, executor_pool
from tests.lock_race import race_at_gate

pytestmark = pytest.mark.integration
__all__ = ["executor_pool"]


def _external(asset: str) -> Correction:
    """10 shares at 0.5 the venue holds and the wallet has no row for."""
    return Correction(asset, EXTERNAL, D(0), D(10), D("0.5"), D(0), D(5), CONDITION, "Yes")


async def test_a_reconciliation_inserts_a_new_external_position_in_key_order(
        db_url: str, executor_pool: AsyncConnectionPool[Any]) -> None:
    # w_1 holds Y (corrected) and Z (agreeing); the venue also holds X, which sorts first and has no row yet
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy("w_1", "sub_a", Y), _buy("w_1", "sub_a", Z)])
    store = ReconcileStore(executor_pool)
    view = await store.view(W.follower_wallet_id, 0.0)

    async def reconciliation() -> None:  # held at Z with Y taken
        await store.apply(W, [_cut(Y), _external(X)], [AtVenue(Z, "", "Yes", D(10), D("0.5"), False)],
                          view.subscriptions)

    async def booking() -> None:  # inserts X, then waits for Y
        async with await _connect(db_url) as conn:
            await _book_on(conn, [_buy("w_1", "sub_a", X), _buy("w_1", "sub_a", Y)])

    gate = f"SELECT 1 FROM positions WHERE follower_wallet_id = 'w_1' AND asset_id = '{Z}' FOR UPDATE"
    outcome = await race_at_gate(db_url, gate, reconciliation, booking)
    assert outcome == ["", ""]
    # the reconciliation opened X as EXTERNAL, the booking's BUY added to it; no row for anything else
    assert rows(db_url, "SELECT asset_id, origin, state, size, venue_shares FROM positions ORDER BY 1") == [
        (X, "EXTERNAL", "OPEN", D(20), D(10)), (Y, "COPY", "OPEN", D(16), D(6)), (Z, "COPY", "OPEN", D(10), D(10))]
