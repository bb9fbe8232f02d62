"""Reconciliation with the venue on the real executor and the Insiders fake: the venue's count is the truth for
what can be sold; corrections, external positions and refused SELLs; unusable answers change nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from common.marketstate import WATCH_POSITIONS
from services.executor import reconciling
from services.executor.adapters.insiders_api import parse_as_of, parse_positions
from services.executor.adapters.reconcile_store import LiveWallet, stored_condition
from services.executor.app import Running
from services.executor.domain.reconcile import AtVenue, CountTime, changed_since_count
from tests.executor.conftest import ASSET, CONDITION, TERMINAL_TYPES, Harness, make_order, rows
from tests.executor.flip import resized_end
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

NO = "2" * 77
WALLET = LiveWallet("w_1", "0x" + "1" * 40)


@pytest.mark.parametrize(("body", "error"), [
    ({}, "positions must be an array"),
    ({"positions": [1]}, r"positions\[0\] must be an object"),
    ({"positions": [{"tokenId": "x1", "size": "1"}]}, r"tokenId must be a decimal token id"),
    ({"positions": [{"tokenId": 123, "size": "1"}]}, r"tokenId must be a decimal token id"),
    ({"positions": [{"tokenId": "123", "size": "lots"}]}, "not a decimal"),
    ({"positions": [{"tokenId": "123", "size": "-1"}]}, r"size must be >= 0"),
    ({"positions": [{"tokenId": "123", "size": "1", "avgPrice": "1.5"}]}, r"avgPrice must be in \[0, 1\]"),
    ({"positions": [{"tokenId": "123", "size": "1", "redeemable": "yes"}]}, "redeemable must be a boolean"),
    ({"positions": [{"tokenId": "123", "size": "1"}, {"tokenId": "0123", "size": "2"}]},
     r"positions\[1\].tokenId repeats token 123"),
])
def test_a_malformed_positions_answer_is_refused_whole(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_positions(body)


def test_a_token_id_written_with_leading_zeros_is_the_booked_one() -> None:
    """Token ids are booked without leading zeros (as ingest reads them): the venue's "02…2" is the position
    booked as "2…2", not a token the engine never booked (closed here, EXTERNAL there)."""
    [p] = parse_positions({"positions": [{"tokenId": "0" + NO, "size": "40"}]}).rows
    assert p.token_id == NO
    [zero] = parse_positions({"positions": [{"tokenId": "000", "size": "1"}]}).rows
    assert zero.token_id == "0"


def test_a_positions_answer_parses_with_optional_fields_missing() -> None:
    answer = parse_positions({"positions": [{"tokenId": "123", "size": 5, "conditionId": "0x" + "AB" * 32}],
                              "asOf": "2026-11-20T10:00:05Z"})
    [p] = answer.rows
    assert (p.token_id, p.size, p.avg_price, p.redeemable, p.condition_id, p.as_of) == (
        "123", D(5), D(0), False, "0x" + "ab" * 32, None)
    assert (answer.as_of, answer.untrusted) == (datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC), [])


@pytest.mark.parametrize(("raw", "at"), [
    ("2026-11-20T10:00:05Z", datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)),
    ("2026-11-20T12:00:05+02:00", datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)),  # the venue's offset, as UTC
    ("2026-11-20T10:00:05.250Z", datetime(2026, 11, 20, 10, 0, 5, 250_000, tzinfo=UTC)),
    (None, None),  # not given
    ("", None),
])
def test_an_as_of_is_read_as_a_utc_time(raw: Any, at: datetime | None) -> None:
    got = parse_as_of(raw)
    assert got == at and (got is None or got.tzinfo is UTC)


@pytest.mark.parametrize("raw", [
    "yesterday", "2026-11-20T10:00:05",  # no offset: whose clock it is cannot be told
    "2026-11-20", 1763632805, 1763632805.5, True, {"t": 1}, "1970-01-01T00:00:00Z",  # a zero, no count time
    "2026-11-20T10:00:05Z" + " " * 60,
])
def test_an_unreadable_as_of_is_refused(raw: Any) -> None:
    with pytest.raises(ValueError, match="asOf"):
        parse_as_of(raw)


AT = "2026-11-20T10:00:05Z"


@pytest.mark.parametrize(("body", "as_of", "row", "untrusted"), [
    # the answer's asOf missing or unreadable: the answer is still used, the field listed (the caller falls back
    # to when it asked)
    ({"positions": [{"tokenId": "1", "size": "1"}]}, None, ("", None), ["asOf"]),
    ({"positions": [{"tokenId": "1", "size": "1"}], "asOf": "soon"}, None, ("", None), ["asOf"]),
    # a row's own asOf is optional; an unreadable one is listed
    ({"positions": [{"tokenId": "1", "size": "1", "asOf": "2026-11-20T09:59:05Z"}], "asOf": AT}, AT,
     ("", "2026-11-20T09:59:05Z"), []),
    ({"positions": [{"tokenId": "1", "size": "1", "asOf": "2026-11-20 09:59"}], "asOf": AT}, AT, ("", None),
     ["positions.asOf"]),
    # a condition id: lower-cased when it is 0x + 64 hex, else not trusted ("")
    ({"positions": [{"tokenId": "1", "size": "1", "conditionId": "0x" + "AB" * 32}], "asOf": AT}, AT,
     ("0x" + "ab" * 32, None), []),
    ({"positions": [{"tokenId": "1", "size": "1", "conditionId": "n/a"}], "asOf": AT}, AT, ("", None),
     ["positions.conditionId"]),
    ({"positions": [{"tokenId": "1", "size": "1", "conditionId": "0xab"}], "asOf": AT}, AT, ("", None),
     ["positions.conditionId"]),
    ({"positions": [{"tokenId": "1", "size": "1", "conditionId": 7}], "asOf": AT}, AT, ("", None),
     ["positions.conditionId"]),
    ({"positions": [{"tokenId": "1", "size": "1", "conditionId": ""}], "asOf": AT}, AT, ("", None), []),
])
def test_an_unreadable_as_of_or_condition_id_leaves_the_answer_usable(
        body: dict[str, Any], as_of: str | None, row: tuple[str, str | None], untrusted: list[str]) -> None:
    answer = parse_positions(body)
    [p] = answer.rows
    assert answer.as_of == parse_as_of(as_of)
    assert (p.condition_id, p.as_of) == (row[0], parse_as_of(row[1]))
    assert [name for name, _why in answer.untrusted] == untrusted


@pytest.mark.parametrize(("condition", "stored"), [
    ("0x" + "AB" * 32, "0x" + "ab" * 32), ("0x" + "ab" * 32, "0x" + "ab" * 32), ("n/a", ""), ("0xab", ""),
    ("0x" + "zz" * 32, ""), ("", ""), ("ab" * 33, ""),
])
def test_an_external_position_is_stored_under_a_condition_id_only_when_it_is_one(condition: str,
                                                                               stored: str) -> None:
    assert stored_condition(condition) == stored


T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC).timestamp()  # when the venue was asked (PostgreSQL's clock)
GRACE_S = 10.0


def _s(seconds: float) -> float:
    return T0 + seconds


@pytest.mark.parametrize(("booked_s", "answer_s", "row_s", "busy"), [
    # a fill booked 15 s before the asking, a count taken 60 s before it: the count cannot hold the fill
    (-15, -60, None, True),
    # the same count time given by the token's row alone, or by the row against a fresher answer
    (-15, None, -60, True),
    (-15, 0, -60, True),
    # a count newer than the booking (beyond the grace) still corrects it: the venue's count is the truth
    (-15, 0, None, False),
    (-15, -60, 0, False),  # the row's own count time is the token's
    (-75, -60, None, False),
    # no usable asOf: the grace counts back from the asking, as before
    (-15, None, None, False),
    (-5, None, None, True),
    # a count time later than the asking (the venue's clock ahead): never later than the asking
    (-5, 30, None, True),
    # within the grace of the count time (settling on-chain, and the two clocks' difference)
    (-65, -60, None, True),
    (-71, -60, None, False),
])
def test_a_position_changed_too_recently_for_the_count_waits_for_the_next_round(
        booked_s: float, answer_s: float | None, row_s: float | None, busy: bool) -> None:
    rows = {ASSET: _s(row_s)} if row_s is not None else {}
    count = CountTime(_s(answer_s) if answer_s is not None else None, rows)
    got = changed_since_count({ASSET: _s(booked_s)}, _s(-GRACE_S), count, GRACE_S)
    assert got == ({ASSET} if busy else set())


def test_a_count_time_is_the_rows_own_else_the_answers() -> None:
    rows = [AtVenue(ASSET, "", "Yes", D(1), D(0), False, _s(-60)), AtVenue(NO, "", "No", D(1), D(0), False)]
    count = CountTime.of(_s(-5), rows)
    assert (count.at(ASSET), count.at(NO), count.at("3" * 77), count.earliest()) == (_s(-60), _s(-5), _s(-5),
                                                                                      _s(-60))
    assert (CountTime().at(ASSET), CountTime().earliest()) == (None, None)


async def _filled(harness: Harness, *orders: epb.Order) -> None:
    await harness.route(*orders)

    async def done() -> bool:
        evs = {e.client_order_id for e in await harness.all_events() if e.type in TERMINAL_TYPES}
        return all(o.client_order_id in evs for o in orders)

    await eventually(done, timeout_s=20)  # type: ignore[arg-type]


def _age(db_url: str) -> None:
    """Bookings older than the settling grace (as if the last fill were a minute ago)."""
    rows(db_url, "UPDATE positions SET updated_at = now() - interval '1 minute' RETURNING 1")


async def _bought(harness: Harness) -> Running:
    await harness.set_book(ASSET, [("0.39", "100000")], [("0.40", "100000")])
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes"), (NO, "No")])
    running = await harness.start_executor()
    await _filled(harness, make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40",
                                      follower_proxy=WALLET.wallet))
    _age(harness.db_url)
    return running


pytestmark = pytest.mark.integration


async def test_a_terminal_sell_and_a_terminal_buy_are_reconciled(harness: Harness) -> None:
    running = await _bought(harness)
    assert running.reconciler is not None
    harness.fake.holdings.terminal_trade("w_1", ASSET, "SELL", D(60), D("0.45"))  # sold in the terminal
    harness.fake.holdings.terminal_trade("w_1", NO, "BUY", D(30), D("0.6"))  # bought there, never booked
    counts = await running.reconciler.reconcile(WALLET)
    assert counts == {ASSET: D(40), NO: D(30)}
    got = {a: (state, origin, size, cost, venue) for a, state, origin, size, cost, venue in rows(
        harness.db_url, "SELECT asset_id, state, origin, size, cost_usd, venue_shares FROM positions")}
    assert got[ASSET] == ("OPEN", "COPY", D(40), D(16), D(40))  # at the same average cost
    assert got[NO] == ("OPEN", "EXTERNAL", D(30), D(18), D(30))
    audits = rows(harness.db_url, "SELECT entity_type, after->>'correction' FROM audit_log"
                                  " WHERE method = 'executor.Reconcile' ORDER BY 2")
    assert audits == [("position", "CORRECTED"), ("position", "EXTERNAL")]
    assert rows(harness.db_url, "SELECT exposure_usd FROM subscription_stats WHERE subscription_id = 'sub_1'") == [
        (D(16),)]
    assert await harness.redis.sismember(WATCH_POSITIONS, NO)  # its book is followed from now on
    assert running.reconciler.stats.corrections == {"CORRECTED": 1, "EXTERNAL": 1}
    # a second round finds nothing to correct, and the venue's count is recorded on the agreeing positions
    _age(harness.db_url)
    await running.reconciler.reconcile(WALLET)
    assert running.reconciler.stats.corrections == {"CORRECTED": 1, "EXTERNAL": 1}
    # everything sold in the terminal: the position is closed
    harness.fake.holdings.terminal_trade("w_1", ASSET, "SELL", D(40), D("0.45"))
    _age(harness.db_url)
    await running.reconciler.reconcile(WALLET)
    assert rows(harness.db_url, "SELECT state, size FROM positions WHERE asset_id = %s", ASSET) == [("CLOSED", 0)]


@pytest.mark.parametrize("fault", ["fail_positions", "garbage_positions"])
async def test_an_unusable_venue_answer_changes_nothing(harness: Harness, fault: str) -> None:
    running = await _bought(harness)
    assert running.reconciler is not None
    harness.fake.holdings.terminal_trade("w_1", ASSET, "SELL", D(60), D("0.45"))
    setattr(harness.fake.faults, fault, 1)
    before = rows(harness.db_url, "SELECT * FROM positions")
    assert await running.reconciler.reconcile(WALLET) is None
    assert rows(harness.db_url, "SELECT * FROM positions") == before
    assert running.reconciler.stats.failures == 1
    assert rows(harness.db_url, "SELECT count(*) FROM audit_log WHERE method = 'executor.Reconcile'") == [(0,)]


async def test_a_fresh_fill_is_left_for_the_next_round(harness: Harness) -> None:
    running = await _bought(harness)
    assert running.reconciler is not None
    harness.fake.holdings.terminal_trade("w_1", ASSET, "SELL", D(60), D("0.45"))
    rows(harness.db_url, "UPDATE positions SET updated_at = now() RETURNING 1")  # a fill booked just now
    await running.reconciler.reconcile(WALLET)
    assert rows(harness.db_url, "SELECT size FROM positions") == [(D(100),)]


async def test_a_count_the_venue_took_before_the_latest_fill_leaves_it_for_the_next_round(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The venue's indexer lags: its row for the token is as of a minute ago, before the last fill was booked (15 s
    ago, past the settling grace), so its count of 40 cannot tell that 60 were sold since; once its count is newer
    than the booking, the count is the truth again."""
    running = await _bought(harness)
    assert running.reconciler is not None
    harness.fake.holdings.terminal_trade("w_1", ASSET, "SELL", D(60), D("0.45"))
    rows(harness.db_url, "UPDATE positions SET updated_at = now() - interval '15 s' RETURNING 1")
    fresh = harness.fake.holdings.wallet_positions
    minute_ago = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    monkeypatch.setattr(harness.fake.holdings, "wallet_positions",
                        lambda wallet: [{**r, "asOf": minute_ago} for r in fresh(wallet)])
    assert await running.reconciler.reconcile(WALLET) == {ASSET: D(40)}
    assert rows(harness.db_url, "SELECT size, cost_usd FROM positions") == [(D(100), D(40))]
    assert rows(harness.db_url, "SELECT count(*) FROM audit_log WHERE method = 'executor.Reconcile'") == [(0,)]
    assert running.reconciler.stats.corrections == {}
    monkeypatch.setattr(harness.fake.holdings, "wallet_positions", fresh)  # the indexer caught up
    await running.reconciler.reconcile(WALLET)
    assert rows(harness.db_url, "SELECT size, cost_usd FROM positions") == [(D(40), D(16))]
    assert running.reconciler.stats.corrections == {"CORRECTED": 1}


async def _refused_sell(harness: Harness) -> epb.Order:
    """A SELL of 100 shares the venue refuses: the wallet sold 60 of its 100 in the terminal."""
    harness.fake.enforce_positions = True
    harness.fake.holdings.terminal_trade("w_1", ASSET, "SELL", D(60), D("0.45"))
    sell = make_order(2, follower_wallet_id="w_1", subscription_id="sub_1", side=cpb.SIDE_SELL, amount_usd="",
                      size="100", follower_proxy=WALLET.wallet)
    await _filled(harness, sell)
    return sell


async def _resized_fill(harness: Harness) -> epb.OrderEvent:
    done = await resized_end(harness)
    assert (done.type, done.filled_size) == (epb.ORDER_EVENT_TYPE_FILLED, "40")
    return done


async def test_a_sell_refused_for_lack_of_shares_is_resized_once_from_the_venues_count(harness: Harness) -> None:
    running = await _bought(harness)
    sell = await _refused_sell(harness)
    first = await harness.terminal(sell.client_order_id)
    assert first is not None and (first.type, first.reason) == (
        epb.ORDER_EVENT_TYPE_REJECTED, "INVALID_ORDER_NOT_ENOUGH_BALANCE")
    done = await _resized_fill(harness)
    assert done.side == cpb.SIDE_SELL
    assert running.reconciler is not None and running.reconciler.stats.resized == 1
    assert harness.fake.post_counts() == {make_order(1).client_order_id: 1, sell.client_order_id: 1,
                                          done.client_order_id: 1}
    assert rows(harness.db_url, "SELECT state, size FROM positions") == [("CLOSED", 0)]


async def test_a_refused_sell_whose_wallet_could_not_be_read_is_resized_on_a_later_try(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciling, "RESIZE_RETRY_S", 0.3)
    running = await _bought(harness)
    harness.fake.faults.fail_positions = 2  # the venue's positions fail twice, then answer
    sell = await _refused_sell(harness)
    done = await _resized_fill(harness)
    assert running.reconciler is not None
    assert (running.reconciler.stats.resized, running.reconciler.stats.resize_retries) == (1, 2)
    assert harness.fake.post_counts() == {make_order(1).client_order_id: 1, sell.client_order_id: 1,
                                          done.client_order_id: 1}


async def test_a_refused_sell_a_crash_left_without_its_resize_is_resized_by_the_next_start(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciling, "RESIZE_RETRY_S", 0.2)
    running = await _bought(harness)
    harness.fake.faults.fail_positions = 10_000  # unreadable until the crash
    sell = await _refused_sell(harness)
    assert running.reconciler is not None
    await eventually(lambda: running.reconciler is not None and running.reconciler.stats.resize_retries >= 2)
    await running.stop(0)
    harness.fake.faults.fail_positions = 0
    running = await harness.start_executor()
    done = await _resized_fill(harness)
    assert running.reconciler is not None and running.reconciler.stats.resized == 1
    assert harness.fake.post_counts() == {make_order(1).client_order_id: 1, sell.client_order_id: 1,
                                          done.client_order_id: 1}
    await running.stop(0)  # a start after the re-size finds nothing left to do
    running = await harness.start_executor()
    await asyncio.sleep(0.5)
    assert running.reconciler is not None and running.reconciler.stats.resized == 0
    assert harness.fake.post_counts()[done.client_order_id] == 1


async def test_a_wallet_subscribed_after_the_start_is_reconciled_within_the_interval(harness: Harness) -> None:
    await harness.set_book(ASSET, [("0.39", "100000")], [("0.40", "100000")])
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes"), (NO, "No")])
    await harness.start_executor(TT_RECONCILE_INTERVAL_S="0.5")
    await _filled(harness, make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40",
                                      follower_proxy=WALLET.wallet))
    _age(harness.db_url)
    harness.fake.holdings.terminal_trade("w_1", ASSET, "SELL", D(60), D("0.45"))
    rows(harness.db_url, "INSERT INTO subscriptions (id, follower_user_id, follower_wallet_id, follower_proxy,"
                         " leader_proxy, state, mode, sizing, filters, risk, exits, perf, create_time, update_time)"
                         " VALUES ('sub_1', 'u_1', 'w_1', %s, %s, 'ACTIVE', 'LIVE', '{}', '{}', '{}', '{}', '{}',"
                         " now(), now()) RETURNING 1", WALLET.wallet, "0x" + "f5" * 20)
    await eventually(lambda: rows(harness.db_url, "SELECT size, venue_shares FROM positions") == [(D(40), D(40))],
                     timeout_s=15)
