"""A copy's fraction SELL on a position the follower bought by hand (origin MANUAL, no split kept) sells none of it:
the shares are no subscription's. The router sends a leader's exit as a fraction when a copy BUY of the wallet is in
flight on the token; if that BUY then fills nothing, the executor sized the fraction on the wallet's shares and sold
the follower's own. A position a copy opened, or one found at the venue (EXTERNAL: it may hold a LOST copy BUY's fill),
keeps being sized on the wallet's shares (real PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from services.executor.adapters.order_store import OrderStore
from tests.executor.conftest import ASSET, Harness
from tests.executor.flip import ASKS, BIDS

pytestmark = pytest.mark.integration

D = Decimal
W = "w_1"


def _position(db_url: str, origin: str, opener: str | None) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, origin, subscription_id) VALUES (%s, %s, 'cond_1', '0xa', 500, 0.4, 200, %s, %s)",
                     (W, ASSET, origin, opener))


@pytest.mark.parametrize(("origin", "opener", "expected"), [
    ("MANUAL", None, "NOTHING_HELD"),  # bought at the terminal: the follower's own
    ("COPY", "sub_A", D(500)),  # its copy opened it
    ("COPY", "sub_B", D(500)),  # another subscription's copy, none kept: the wallet's, as before splits
    ("EXTERNAL", None, D(500)),  # found at the venue: may be a LOST copy BUY's fill
])
async def test_a_copys_share_of_a_position_bought_by_hand_is_none(harness: Harness, db_url: str, origin: str,
                                                                  opener: str | None,
                                                                  expected: Decimal | str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    store: OrderStore = running.admission.store
    _position(db_url, origin, opener)
    got = await store.sellable(W, ASSET, "sub_A")
    assert (got[0] if isinstance(got, tuple) else got) == expected
    assert await store.sellable(W, ASSET) == D(500)  # exits and manual SELLs: the wallet's shares
