"""A placed order the venue answers with a status word the contract does not list (real PostgreSQL, Redis, gRPC and the
Insiders fake): never ended on a guess (it stays PLACED, asked again, nothing booked, its reservation held), and once
it was answered so for the placed orders' LOST window, VENUE_ANSWER_IMPLAUSIBLE goes out so a person looks (before,
it was polled for ever without a word)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import pytest

from common import reservations
from common.alerts import ALERTS_STREAM, FIELD, Alert, AlertKind
from sim.insiders import InsidersFake
from sim.venue import FakeOrder
from tests.executor.conftest import ASSET, CONDITION, PLAIN_ASKS, PLAIN_BIDS, Harness, make_order, rows, running_harness
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal


class WordFake(InsidersFake):
    """Names a settled order with ``word`` instead of ``confirmed`` in its status queries."""

    word = "expired"

    def view(self, o: FakeOrder) -> FakeOrder:
        seen = super().view(o)
        return replace(seen, status=self.word) if seen.status == "confirmed" else seen


@pytest.fixture
async def worded(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(redis_url, db_url, WordFake) as h:
        yield h


async def _placed_and_answered(h: Harness, word: str, **env: str) -> epb.Order:
    """A BUY the fake filled and then answers ``word`` about, reserved like a routed copy."""
    assert isinstance(h.fake, WordFake)
    h.fake.word = word
    await h.set_book(ASSET, PLAIN_BIDS, PLAIN_ASKS)
    o = make_order(1, amount_usd="10")
    await reservations.reserve(h.redis, [reservations.Reservation(
        o.client_order_id, o.follower_wallet_id, reservations.USD, CONDITION, 10_000_000, "lt_1")])
    await h.start_executor(**env)  # type: ignore[arg-type]
    await h.route(o)
    before = 0

    async def asked_again() -> bool:
        nonlocal before
        if not before and rows(h.db_url, "SELECT state FROM orders") == [("PLACED",)]:
            before = h.fake.queries
        return bool(before) and h.fake.queries >= before + 5
    await eventually(asked_again, timeout_s=15)  # type: ignore[arg-type]
    return o


async def _reserved(h: Harness, wallet: str) -> int:
    return (await reservations.read(h.redis, [wallet]))[wallet].total_usd_micro


async def _unlisted_alerts(h: Harness, coid: str) -> list[Alert]:
    entries = await h.sredis.xrange(ALERTS_STREAM) or []
    alerts = [Alert.from_json(fields[FIELD]) for _, fields in entries if fields]
    return [a for a in alerts if a.kind == AlertKind.VENUE_ANSWER_IMPLAUSIBLE
            and a.fields.get("client_order_id") == coid and a.dedupe_id.startswith("venue_status_unlisted:")]


@pytest.mark.parametrize("word", ["expired", "RETRYING", "canceled_market_resolved"])
async def test_an_unlisted_status_never_ends_the_order_on_a_guess(worded: Harness, db_url: str, word: str) -> None:
    harness = worded
    o = await _placed_and_answered(harness, word)
    assert await harness.terminal(o.client_order_id) is None
    assert rows(db_url, "SELECT state FROM orders") == [("PLACED",)]
    assert rows(db_url, "SELECT count(*) FROM fills") == [(0,)]
    assert await _reserved(harness, o.follower_wallet_id) > 0  # held until the venue says (or an operator ends it)


async def test_an_order_answered_only_with_an_unlisted_status_for_the_lost_window_alerts_once(
        worded: Harness, db_url: str) -> None:
    harness = worded
    o = await _placed_and_answered(harness, "expired", TT_TUNE_EXECUTOR_PLACED_LOST_AFTER_S="0.5")

    async def alerted() -> list[Alert]:
        return await _unlisted_alerts(harness, o.client_order_id)
    alerts: list[Alert] = await eventually(alerted, timeout_s=10)
    [alert] = alerts
    assert (alert.fields["status"], alert.fields["call"], alert.severity) == ("expired", "query", "CRITICAL")
    assert D(alert.fields["filled_size"]) > 0
    queries = harness.fake.queries
    await eventually(lambda: harness.fake.queries >= queries + 5, timeout_s=10)
    assert len(await _unlisted_alerts(harness, o.client_order_id)) == 1  # once per order
    assert rows(db_url, "SELECT state FROM orders") == [("PLACED",)]  # still asked, never guessed
