"""A PostgreSQL failover seen by the executor: its connections drop and the ones it opens again reach a server that
refuses writes (``ReadOnlySqlTransaction``, SQLSTATE 25006) for a moment. That is an outage, not a bad routed trade:
the trade is retried for as long as it lasts, past the consumer's ``max_handler_attempts``, and the copy is made
once writes come back, rather than dead-lettered (its reservations released, the copy never made)."""

from __future__ import annotations

import pytest

from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually, read_only_database

pytestmark = pytest.mark.integration

BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]
ATTEMPTS = 5  # the executor's consumer: ResumableConsumer's default max_handler_attempts


async def test_a_copy_routed_while_postgres_refuses_writes_is_made_once_writes_come_back(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    warm = make_order(1)
    await harness.route(warm)
    await eventually(lambda: harness.all_terminal([warm]), timeout_s=15)
    stats = running.consumer.stats
    assert running.consumer.max_handler_attempts == ATTEMPTS

    order = make_order(2)
    with read_only_database(db_url, "tt-executor", "tt-executor-intents"):
        await harness.route(order)
        # past the point where a bad item is dead-lettered
        await eventually(lambda: stats.dead_lettered or stats.transient_errors > ATTEMPTS, timeout_s=15)
        assert stats.dead_lettered == 0, "a routed trade was dead-lettered while PostgreSQL refused writes"

    await eventually(lambda: harness.all_terminal([order]), timeout_s=15)
    states = rows(db_url, "SELECT state FROM orders WHERE client_order_id = %s", order.client_order_id)
    assert states == [("FILLED",)]
    assert harness.fake.post_counts().get(order.client_order_id) == 1
    assert stats.dead_lettered == 0 and await harness.sredis.xlen("tt:dlq:executor") == 0
