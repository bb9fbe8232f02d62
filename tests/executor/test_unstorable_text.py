"""A copy whose order carries text PostgreSQL cannot store is still booked when the venue fills it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_executor_books_a_filled_copy_whatever_text_the_leader_trade_carried(harness: Harness) -> None:
    """The same unsanitised feed text reaches the executor: Order.outcome is the leader trade's outcome, and the
    fill row stores it as text. Once the venue filled the copy, the journal must record FILLED and the fill (the
    follower holds the shares): a write that can never succeed must not leave the order SUBMITTING forever,
    unbooked, with its reservation held."""
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "100000")])
    await harness.start_executor()
    order = make_order(1, outcome="Yes\x00")
    await harness.route(order)
    await eventually(lambda: harness.fake.post_counts().get(order.client_order_id) == 1, timeout_s=10)

    def state() -> list[tuple[Any, ...]]:
        return rows(harness.db_url, "SELECT state FROM orders WHERE client_order_id = %s", order.client_order_id)

    try:
        await eventually(lambda: state() == [("FILLED",)], timeout_s=8)
    except AssertionError:
        fills = rows(harness.db_url, "SELECT count(*) FROM fills WHERE order_id = %s", order.client_order_id)
        raise AssertionError(f"venue filled the copy, but PostgreSQL has state {state()} and fills {fills}") from None
