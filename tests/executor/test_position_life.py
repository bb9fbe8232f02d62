"""Positions after the copy, on the real executor: a market resolves and its positions settle (caps freed, PnL
realized, settlement fills), LIVE winners are redeemed once through the Insiders fake and followed to
confirmation, whatever fails or restarts on the way."""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import pytest

from common.storage import create_pool
from services.executor.domain.settlement import redemption_key
from services.router.adapters.store import RouterStore
from services.router.adapters.store_sql import PLANNER_OPTIONS
from tests.executor.conftest import ASSET, CONDITION, TERMINAL_TYPES, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

NO = "2" * 77


def resolution(winner: str = ASSET) -> mpb.MarketResolution:
    return mpb.MarketResolution(condition_id=CONDITION, asset_ids=[ASSET, NO], winning_asset_id=winner,
                                source=mpb.RESOLUTION_SOURCE_CLOB_SOCKET, received_time_ns=time.time_ns())


async def _buy(harness: Harness, *orders: epb.Order) -> None:
    await harness.route(*orders)

    async def done() -> bool:
        evs = {e.client_order_id: e for e in await harness.all_events() if e.type in TERMINAL_TYPES}
        return all(o.client_order_id in evs for o in orders)

    await eventually(done, timeout_s=20)  # type: ignore[arg-type]
    for o in orders:
        ev = await harness.terminal(o.client_order_id)
        assert ev is not None and ev.type == epb.ORDER_EVENT_TYPE_FILLED, ev


def _state(db_url: str) -> dict[str, tuple[Any, ...]]:
    return {w: (state, size, resolved, payout) for w, state, size, resolved, payout in rows(
        db_url, "SELECT follower_wallet_id, state, size, resolved_shares, payout_per_share FROM positions")}


async def _market(harness: Harness) -> None:
    await harness.set_book(ASSET, [("0.39", "100000")], [("0.40", "100000")])
    await harness.set_book(NO, [("0.59", "100000")], [("0.60", "100000")])
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes"), (NO, "No")])


async def _router_view(db_url: str, wallets: list[str]) -> dict[str, Any]:
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True, options=PLANNER_OPTIONS)
    try:
        batch = await RouterStore(pool).load_batch(leader_trade_ids=[], wallets=wallets, markets=[CONDITION],
                                                    assets=[ASSET], leader_assets=[], pnl_day_ms=None,
                                                    funding_wallets=[])
        return {w: batch.position(w, CONDITION, ASSET) for w in wallets}
    finally:
        await pool.close()


async def test_a_resolution_settles_every_position_frees_the_caps_and_redeems_the_winners_once(
        harness: Harness) -> None:
    await _market(harness)
    running = await harness.start_executor()
    live_yes = make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40")  # 100 @ 0.40
    live_no = make_order(2, follower_wallet_id="w_2", subscription_id="sub_2", asset_id=NO, amount_usd="30")
    paper_yes = make_order(3, follower_wallet_id="w_3", subscription_id="sub_3", amount_usd="20",
                           mode=cpb.EXECUTION_MODE_PAPER)
    await _buy(harness, live_yes, live_no, paper_yes)
    before = await _router_view(harness.db_url, ["w_1", "w_2", "w_3"])
    assert all(p.total_cost_usd > 0 and p.markets for p in before.values())

    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(resolution().SerializeToString())

    async def settled() -> bool:
        s = _state(harness.db_url)
        return s["w_1"][0] == "REDEEMED" and s["w_2"][0] == "RESOLVED_LOST" and s["w_3"][0] == "RESOLVED_WON"

    await eventually(settled, timeout_s=20)  # type: ignore[arg-type]
    s = _state(harness.db_url)
    assert s["w_1"][1:] == (0, D(100), 1) and s["w_2"][1:] == (0, D(50), 0) and s["w_3"][1:] == (0, D(50), 1)
    # caps: nothing open any more for the router to count
    after = await _router_view(harness.db_url, ["w_1", "w_2", "w_3"])
    assert all(p.total_cost_usd == 0 and not p.markets for p in after.values())
    # PnL realized per subscription: payout less cost; exposure freed
    stats = {sub: (exp, pnl) for sub, exp, pnl in rows(
        harness.db_url, "SELECT subscription_id, exposure_usd, realized_pnl_usd FROM subscription_stats")}
    assert stats == {"sub_1": (0, D(60)), "sub_2": (0, D(-30)), "sub_3": (0, D(30))}
    # the positions' ends are fills (a SELL at the payout) and audit-log rows
    assert sorted(rows(harness.db_url, "SELECT follower_wallet_id, side, size, price FROM fills"
                                       " WHERE starts_with(order_id, 'settle_') ORDER BY 1")) == [
        ("w_1", "SELL", D(100), D(1)), ("w_2", "SELL", D(50), D(0)), ("w_3", "SELL", D(50), D(1))]
    assert rows(harness.db_url, "SELECT count(*) FROM audit_log WHERE method = 'executor.SettleResolution'") == [(3,)]
    # one redemption, LIVE winner only, confirmed, with its events on the stream and in the audit log
    key = redemption_key("w_1", CONDITION)
    assert harness.fake.holdings.taken() == {f"w_1|{CONDITION}": 1}
    assert [r.key for r in harness.fake.holdings.records] == [key]
    assert rows(harness.db_url, "SELECT state, attempts, tx_hash <> '' FROM redemptions") == [("CONFIRMED", 1, True)]
    events = [epb.RedemptionEvent.FromString(p) for _, p in await harness.redemption_events.read("0-0", block_ms=0)]
    assert [e.type for e in events] == [epb.REDEMPTION_EVENT_TYPE_PENDING, epb.REDEMPTION_EVENT_TYPE_SUBMITTED,
                                        epb.REDEMPTION_EVENT_TYPE_CONFIRMED]
    assert events[-1].payout_usd == "100" and events[-1].redemption_key == key
    assert rows(harness.db_url, "SELECT count(*) FROM audit_log WHERE entity_type = 'redemption'")[0][0] >= 2

    # the same resolution again (redelivered): nothing settles or redeems twice
    await harness.resolutions.append(resolution().SerializeToString())
    await eventually(lambda: running.resolutions is not None and running.resolutions.stats.handled == 2)
    assert rows(harness.db_url, "SELECT count(*) FROM fills WHERE starts_with(order_id, 'settle_')") == [(3,)]
    assert harness.fake.holdings.taken() == {f"w_1|{CONDITION}": 1}


async def test_a_redemption_in_flight_when_the_executor_stops_is_sent_again_with_its_key_and_redeems_once(
        harness: Harness) -> None:
    await _market(harness)
    await harness.start_executor(TT_TUNE_EXECUTOR_QUERY_TIMEOUT_S="30")
    await _buy(harness, make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40"))
    harness.fake.faults.timeout_redeems, harness.fake.faults.timeout_delay_s = 1, 60.0  # taken, answer held
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(resolution().SerializeToString())
    await eventually(lambda: [r.outcome for r in harness.fake.holdings.records] == ["timeout"], timeout_s=20)
    assert harness.executor is not None
    await harness.executor.stop(0)  # gone before it learnt the answer: the attempt is on record, PENDING
    assert rows(harness.db_url, "SELECT state, attempts FROM redemptions") == [("PENDING", 1)]
    await harness.start_executor()

    async def confirmed() -> bool:
        return rows(harness.db_url, "SELECT state FROM redemptions") == [("CONFIRMED",)]

    await eventually(confirmed, timeout_s=20)  # type: ignore[arg-type]
    assert [r.outcome for r in harness.fake.holdings.records] == ["timeout", "replayed"]
    assert harness.fake.holdings.taken() == {f"w_1|{CONDITION}": 1}
    assert rows(harness.db_url, "SELECT state FROM positions") == [("REDEEMED",)]


async def test_a_final_refusal_fails_the_redemption_with_its_reason_and_a_5xx_is_retried(harness: Harness) -> None:
    await _market(harness)
    await harness.start_executor()
    await _buy(harness, make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40"),
               make_order(2, follower_wallet_id="w_2", subscription_id="sub_2", amount_usd="40"))
    harness.fake.faults.fail_redeems = 1  # the first POST (whichever wallet) answers 503
    harness.fake.faults.reject_redeems.append("NOTHING_TO_REDEEM")  # the next new one is refused for good
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(resolution().SerializeToString())

    async def ended() -> bool:
        got = rows(harness.db_url, "SELECT state FROM redemptions")
        return len(got) == 2 and all(s in ("CONFIRMED", "FAILED") for (s,) in got)

    await eventually(ended, timeout_s=30)  # type: ignore[arg-type]
    got = {w: (s, r) for w, s, r in rows(harness.db_url, "SELECT follower_wallet_id, state, reason FROM redemptions")}
    assert sorted(got.values()) == [("CONFIRMED", ""), ("FAILED", "NOTHING_TO_REDEEM")]
    outcomes = [r.outcome for r in harness.fake.holdings.records]
    assert outcomes.count("fault") == 1 and outcomes.count("rejected") == 1 and outcomes.count("created") == 1
    failed = next(w for w, (s, _) in got.items() if s == "FAILED")
    assert rows(harness.db_url, "SELECT state FROM positions WHERE follower_wallet_id = %s", failed) == [
        ("RESOLVED_WON",)]


@pytest.mark.parametrize("word", ["pending", "mined"])
async def test_a_redemption_taken_under_a_status_word_the_contract_does_not_list_is_followed_to_confirmation(
        harness: Harness, word: str) -> None:
    await _market(harness)
    running = await harness.start_executor()
    await _buy(harness, make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40"))
    harness.fake.faults.redeem_status_words.append(word)  # taken (a redeemId), answered with an unlisted word
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(resolution().SerializeToString())

    async def ended() -> bool:
        return rows(harness.db_url, "SELECT state FROM redemptions") in ([("CONFIRMED",)], [("FAILED",)])

    await eventually(ended, timeout_s=20)  # type: ignore[arg-type]
    assert rows(harness.db_url, "SELECT state, reason, redeem_id <> '' FROM redemptions") == [("CONFIRMED", "", True)]
    assert rows(harness.db_url, "SELECT state FROM positions") == [("REDEEMED",)]
    assert harness.fake.redeem_queries >= 1  # the engine asked GET /v1/redeem/{redeemId}
    assert [r.outcome for r in harness.fake.holdings.records] == ["created"]  # posted once

    async def event_types() -> list[int]:  # the last change is appended after its row is stored
        types = [epb.RedemptionEvent.FromString(p).type
                 for _, p in await harness.redemption_events.read("0-0", block_ms=0)]
        assert types[-1:] == [epb.REDEMPTION_EVENT_TYPE_CONFIRMED]
        return types

    assert await eventually(event_types) == [epb.REDEMPTION_EVENT_TYPE_PENDING,  # type: ignore[arg-type]
                                             epb.REDEMPTION_EVENT_TYPE_SUBMITTED, epb.REDEMPTION_EVENT_TYPE_CONFIRMED]
    assert running.redeemer is not None and running.redeemer.unknown_statuses == 1


async def test_with_auto_redeem_off_redemptions_are_recorded_but_not_sent(harness: Harness) -> None:
    await _market(harness)
    running = await harness.start_executor(TT_AUTO_REDEEM="false")
    await _buy(harness, make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40"))
    await harness.resolutions.append(resolution().SerializeToString())
    await eventually(lambda: rows(harness.db_url, "SELECT state FROM redemptions") == [("PENDING",)])
    assert running.redeemer is not None and running.redeemer.posts == 0
    assert harness.fake.holdings.records == []
    assert rows(harness.db_url, "SELECT state FROM positions") == [("RESOLVED_WON",)]


async def test_a_resolution_without_a_clear_winner_is_not_applied(harness: Harness) -> None:
    await _market(harness)
    running = await harness.start_executor()
    await _buy(harness, make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40"))
    await harness.resolutions.append(resolution(winner="9" * 77).SerializeToString())
    await eventually(lambda: running.settler is not None and running.settler.stats.refused == 1)
    assert rows(harness.db_url, "SELECT state FROM positions") == [("OPEN",)]


async def test_a_resolution_redeems_many_wallets_at_once(harness: Harness) -> None:
    await _market(harness)
    await harness.start_executor()
    orders = [make_order(i, follower_wallet_id=f"w_{i:03d}", subscription_id=f"sub_{i}", amount_usd="4")
              for i in range(100)]
    await _buy(harness, *orders)
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(resolution().SerializeToString())

    async def confirmed() -> bool:
        return rows(harness.db_url, "SELECT count(*) FROM redemptions WHERE state = 'CONFIRMED'") == [(100,)]

    await eventually(confirmed, timeout_s=30)  # type: ignore[arg-type]
    assert len(harness.fake.holdings.taken()) == 100
    db = harness.db_url
    assert rows(db, "SELECT count(*) FROM positions WHERE state = 'REDEEMED'") == [(100,)]
    assert rows(db, "SELECT count(DISTINCT entity_id), count(*) FROM audit_log WHERE entity_type = 'redemption'"
                    " AND after->>'state' = 'CONFIRMED'") == [(100, 100)]  # one audit row per redemption's end
    await eventually(lambda: rows(db, "SELECT count(*) FROM redemptions WHERE published_state <> state") == [(0,)])


async def test_a_batch_of_redemptions_stops_at_an_open_breaker_and_keeps_the_rest_pending(harness: Harness) -> None:
    await _market(harness)
    await harness.start_executor(TT_TUNE_EXECUTOR_BREAKER_THRESHOLD="3", TT_TUNE_EXECUTOR_BREAKER_OPEN_S="600")
    orders = [make_order(i, follower_wallet_id=f"w_{i:03d}", subscription_id=f"sub_{i}", amount_usd="4")
              for i in range(80)]
    await _buy(harness, *orders)
    harness.fake.faults.fail_redeems = 1000  # the venue answers every redeem 503
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(resolution().SerializeToString())

    async def held() -> bool:
        return rows(harness.db_url, "SELECT count(*) FROM redemptions WHERE reason = 'BREAKER_OPEN'") != [(0,)]

    await eventually(held, timeout_s=30)  # type: ignore[arg-type]
    sent = len(harness.fake.holdings.records)
    assert 3 <= sent < 80  # the calls already out when it opened, not the whole batch
    got = rows(harness.db_url, "SELECT state, count(*) FROM redemptions GROUP BY state")
    assert got == [("PENDING", 80)]
    assert harness.fake.holdings.taken() == {}
