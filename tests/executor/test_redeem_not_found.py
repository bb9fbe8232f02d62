"""A redemption the venue took (it answered a ``redeemId``) whose status query the venue then answers 404 for good
(``REDEMPTION_NOT_FOUND``: it no longer knows that redemption) was asked about for ever: SUBMITTED with a growing
backoff, read as ``VENUE_UNAVAILABLE``, no alert, the winner's payout never known to be in the wallet. A few
not-founds in a row now end it FAILED (``REDEMPTION_NOT_FOUND``), which raises the redemption alert.

(From the review of settlement and redemption.)"""

from __future__ import annotations

import time

import pytest

from common.alerts import ALERTS_STREAM, FIELD, Alert
from tests.executor.conftest import ASSET, CONDITION, TERMINAL_TYPES, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

NO = "2" * 77


async def _bought_and_resolved(harness: Harness) -> None:
    await harness.set_book(ASSET, [("0.39", "100000")], [("0.40", "100000")])
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes"), (NO, "No")])
    order = make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40")
    await harness.route(order)
    await eventually(lambda: harness.all_terminal([order]), timeout_s=20)  # type: ignore[arg-type,return-value]
    ev = await harness.terminal(order.client_order_id)
    assert ev is not None and ev.type == epb.ORDER_EVENT_TYPE_FILLED and ev.type in TERMINAL_TYPES
    harness.fake.settle_s = 3600.0  # the redemption stays `submitted` at the venue
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(mpb.MarketResolution(
        condition_id=CONDITION, asset_ids=[ASSET, NO], winning_asset_id=ASSET,
        source=mpb.RESOLUTION_SOURCE_CLOB_SOCKET, received_time_ns=time.time_ns()).SerializeToString())


async def _alerts(harness: Harness) -> list[str]:
    """The keys of the REDEMPTION_FAILED alerts on the alert stream."""
    entries = await harness.sredis.xrange(ALERTS_STREAM) or []
    alerts = [Alert.from_json(fields[FIELD]) for _, fields in entries if fields]
    return [str(a.fields.get("redemption_key", "")) for a in alerts if a.kind == "REDEMPTION_FAILED"]


async def test_a_redemption_the_venue_no_longer_finds_ends_failed_and_alerts_instead_of_being_asked_for_ever(
        harness: Harness) -> None:
    await harness.start_executor(TT_TUNE_EXECUTOR_REDEEM_NOT_FOUND_S="1")
    await _bought_and_resolved(harness)
    await eventually(lambda: rows(harness.db_url, "SELECT state FROM redemptions") == [("SUBMITTED",)],
                     timeout_s=20)
    harness.fake.holdings.redemptions.clear()  # the venue no longer knows it: GET /v1/redeem/{id} answers 404

    async def ended() -> bool:
        return rows(harness.db_url, "SELECT state FROM redemptions") == [("FAILED",)]

    await eventually(ended, timeout_s=30)  # type: ignore[arg-type]
    assert rows(harness.db_url, "SELECT reason FROM redemptions") == [("REDEMPTION_NOT_FOUND",)]
    assert 3 <= harness.fake.redeem_queries <= 4  # a few not-founds in a row, then no more asking
    assert len(await eventually(lambda: _alerts(harness))) == 1
    assert [r.outcome for r in harness.fake.holdings.records] == ["created"]  # never posted again
    assert rows(harness.db_url, "SELECT state FROM positions") == [("RESOLVED_WON",)]


async def test_a_not_found_between_answers_is_asked_again(harness: Harness) -> None:
    """One 404 (the venue's index lagging) is no reason to give up: the redemption is followed to its end."""
    await harness.start_executor()
    await _bought_and_resolved(harness)
    await eventually(lambda: rows(harness.db_url, "SELECT state FROM redemptions") == [("SUBMITTED",)],
                     timeout_s=20)
    held = dict(harness.fake.holdings.redemptions)
    harness.fake.holdings.redemptions.clear()
    await eventually(lambda: harness.fake.redeem_queries >= 1, timeout_s=20)
    harness.fake.holdings.redemptions.update(held)  # found again
    harness.fake.settle_s = 0.0
    await eventually(lambda: rows(harness.db_url, "SELECT state FROM redemptions") == [("CONFIRMED",)],
                     timeout_s=30)
    assert rows(harness.db_url, "SELECT state FROM positions") == [("REDEEMED",)]


async def test_not_founds_for_less_than_the_window_do_not_end_a_redemption(harness: Harness) -> None:
    """Three 404s come within about 5 s of the POST: a venue lagging its own writes, or a deploy of it, must not end
    a redemption it took (FAILED for good, while the venue pays)."""
    await harness.start_executor()  # the default window: 10 minutes
    await _bought_and_resolved(harness)
    await eventually(lambda: rows(harness.db_url, "SELECT state FROM redemptions") == [("SUBMITTED",)],
                     timeout_s=20)
    harness.fake.holdings.redemptions.clear()
    await eventually(lambda: harness.fake.redeem_queries >= 4, timeout_s=30)
    assert rows(harness.db_url, "SELECT state FROM redemptions") == [("SUBMITTED",)]
