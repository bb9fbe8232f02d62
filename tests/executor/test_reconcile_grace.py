"""The settling grace of reconciliation counts back from when the venue took its count (its ``asOf``, never later than
when the venue was asked): its count may lack a fill booked a few seconds before, a lagging count every fill booked
after it, and the time its answer (and the read of the books) took must not eat into the grace."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.ports import Answer
from services.executor.reconciling import Reconciler
from tests.helpers import eventually

pytestmark = pytest.mark.integration

ASSET = "7" * 77
WALLET = LiveWallet("w_1", "0x" + "1" * 40)


def _rows(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def _booked(db_url: str, age_s: float) -> None:
    """A copy position of 100 shares whose last fill was booked ``age_s`` ago."""
    _rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                  " cost_usd, id, state, origin, subscription_id, venue, updated_at, opened_at) VALUES"
                  f" ('w_1', '{ASSET}', '0xab', '{WALLET.wallet}', 100, 0.4, 40, 'pos_1', 'OPEN', 'COPY', 'sub_1',"
                  f" 'INSIDERS', now() - interval '{age_s} s', now() - interval '{age_s} s')")


class SlowVenue:
    """Takes its snapshot when asked (the fill is not on-chain yet) and answers ``latency_s`` later."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def positions(self, wallet_id: str) -> Answer:
        await asyncio.sleep(self.latency_s)
        return Answer(200, {"positions": []})


async def _known(ids: list[str]) -> set[str]:
    return set()


@pytest.mark.parametrize("latency_s", [0.6, 0.0])
async def test_a_fill_booked_just_before_a_slow_venue_answer_is_not_corrected_away(
        db_url: str, latency_s: float) -> None:
    _booked(db_url, 0.2)
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), SlowVenue(latency_s), None, interval_s=300.0, known=_known,
                         grace_s=0.5)
        await rec.reconcile(WALLET)
    finally:
        await pool.close()
    assert _rows(db_url, "SELECT state, size FROM positions") == [("OPEN", D(100))]


async def test_the_grace_counts_back_from_when_the_venue_was_asked(db_url: str) -> None:
    _booked(db_url, 12)
    pool = await create_pool(db_url, autocommit=True)
    try:
        store = ReconcileStore(pool)
        assert (await store.view("w_1", 10.0)).busy == set()  # booked 12 s ago: settled
        asked_5s_ago = time.monotonic() - 5
        assert (await store.view("w_1", 10.0, asked_5s_ago)).busy == {ASSET}  # 7 s before the venue was asked
    finally:
        await pool.close()


async def test_a_settled_position_the_venue_does_not_hold_is_corrected(db_url: str) -> None:
    _booked(db_url, 5)
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), SlowVenue(0.0), None, interval_s=300.0, known=_known, grace_s=0.5)
        await rec.reconcile(WALLET)
    finally:
        await pool.close()
    assert _rows(db_url, "SELECT state, size FROM positions") == [("CLOSED", D(0))]


CONDITION = "0x" + "ab" * 32
ABSENT = object()


def _iso(age_s: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=age_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Snapshot:
    """The venue's count of 100 shares of ASSET, taken ``answer_age_s`` ago by the answer's asOf (``ABSENT``: no
    asOf; a string: that asOf) and ``row_age_s`` ago by the row's own (None: the row has none)."""

    def __init__(self, answer_age_s: float | str | object, row_age_s: float | None = None, *,
                 condition: str = CONDITION) -> None:
        self.answer_age_s = answer_age_s
        self.row_age_s = row_age_s
        self.condition = condition

    async def positions(self, wallet_id: str) -> Answer:
        row: dict[str, Any] = {"tokenId": ASSET, "conditionId": self.condition, "outcome": "Yes", "size": "100",
                               "avgPrice": "0.4", "redeemable": False}
        if self.row_age_s is not None:
            row["asOf"] = _iso(self.row_age_s)
        body: dict[str, Any] = {"positions": [row]}
        if isinstance(self.answer_age_s, int | float):
            body["asOf"] = _iso(self.answer_age_s)
        elif isinstance(self.answer_age_s, str):
            body["asOf"] = self.answer_age_s
        return Answer(200, body)


def _bought_150(db_url: str, booked_s: float) -> None:
    """150 shares booked, the last 50 by a fill ``booked_s`` ago (past the 10 s grace)."""
    _rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                  " cost_usd, id, state, origin, subscription_id, venue, updated_at, opened_at) VALUES"
                  f" ('w_1', '{ASSET}', '{CONDITION}', '{WALLET.wallet}', 150, 0.4, 60, 'pos_1', 'OPEN', 'COPY',"
                  f" 'sub_1', 'INSIDERS', now() - interval '{booked_s} s', now() - interval '120 s')")


async def _reconciled(db_url: str, venue: Any) -> Reconciler:
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), venue, None, interval_s=300.0, known=_known)
        await rec.reconcile(WALLET)
    finally:
        await pool.close()
    return rec


def _audits(db_url: str) -> list[tuple[Any, ...]]:
    return _rows(db_url, "SELECT after->>'correction', after->>'shares' FROM audit_log"
                         " WHERE method = 'executor.Reconcile'")


@pytest.mark.parametrize(("answer_age_s", "row_age_s"), [(60, None), (0, 60), (ABSENT, 60)])
async def test_a_count_taken_before_a_fill_was_booked_does_not_correct_it_away(
        db_url: str, answer_age_s: float | object, row_age_s: float | None) -> None:
    _bought_150(db_url, 15)
    rec = await _reconciled(db_url, Snapshot(answer_age_s, row_age_s))
    got = _rows(db_url, "SELECT state, size, cost_usd, venue_shares FROM positions")
    assert got == [("OPEN", D(150), D(60), D(100))], f"a count as of 60 s ago corrected a fill booked 15 s ago: {got}"
    assert (_audits(db_url), rec.stats.corrections) == ([], {})


@pytest.mark.parametrize(("answer_age_s", "row_age_s"), [(0, None), (60, 0), (ABSENT, 0)])
async def test_a_count_newer_than_every_booking_still_corrects(db_url: str, answer_age_s: float | object,
                                                             row_age_s: float | None) -> None:
    _bought_150(db_url, 15)
    rec = await _reconciled(db_url, Snapshot(answer_age_s, row_age_s))
    assert _rows(db_url, "SELECT state, size, cost_usd FROM positions") == [("OPEN", D(100), D(40))]
    assert (_audits(db_url), rec.stats.corrections) == ([("CORRECTED", "100")], {"CORRECTED": 1})


@pytest.mark.parametrize(("count_age_s", "after"), [
    (60, ("CLOSED", "COPY", D(0))),  # the count lists what the engine sold since
    (0, ("OPEN", "EXTERNAL", D(100))),  # bought again outside the engine after the sale
])
async def test_a_count_taken_before_the_last_sale_opens_no_external_position(
        db_url: str, count_age_s: float, after: tuple[str, str, D]) -> None:
    _rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                  " cost_usd, id, state, origin, subscription_id, venue, updated_at, opened_at, closed_at) VALUES"
                  f" ('w_1', '{ASSET}', '{CONDITION}', '{WALLET.wallet}', 0, 0, 0, 'pos_1', 'CLOSED', 'COPY',"
                  " 'sub_1', 'INSIDERS', now() - interval '15 s', now() - interval '120 s', now() - interval '15 s')")
    await _reconciled(db_url, Snapshot(count_age_s))
    assert _rows(db_url, "SELECT state, origin, size FROM positions") == [after]
    assert len(_audits(db_url)) == (after[1] == "EXTERNAL")


@pytest.mark.parametrize("as_of", [ABSENT, "", "2026-11-20T10:00:05", "not a time", "1970-01-01T00:00:00Z"])
@pytest.mark.parametrize(("booked_s", "size"), [(15, D(100)), (5, D(150))])
async def test_an_answer_without_a_usable_as_of_counts_back_from_the_asking(
        db_url: str, as_of: object, booked_s: float, size: D) -> None:
    _bought_150(db_url, booked_s)
    rec = await _reconciled(db_url, Snapshot(as_of))
    assert _rows(db_url, "SELECT size FROM positions") == [(size,)]
    assert (rec.stats.untrusted, rec.stats.failures) == ({"asOf": 1}, 0)


@pytest.mark.parametrize(("given", "stored", "untrusted"), [
    ("0x" + "AB" * 32, CONDITION, {}),
    ("n/a", "", {"positions.conditionId": 1}),
    ("0xAB", "", {"positions.conditionId": 1}),
])
async def test_an_external_position_keeps_a_condition_id_only_when_it_is_one(
        db_url: str, given: str, stored: str, untrusted: dict[str, int]) -> None:
    rec = await _reconciled(db_url, Snapshot(0, condition=given))
    assert _rows(db_url, "SELECT origin, condition_id FROM positions") == [("EXTERNAL", stored)]
    assert rec.stats.untrusted == untrusted


def _live_subscription(db_url: str) -> None:
    """Wallet w_1 copies LIVE: reconciliation follows it."""
    _rows(db_url, "INSERT INTO subscriptions (id, follower_user_id, follower_wallet_id, follower_proxy, leader_proxy,"
                  " state, mode, sizing, filters, risk, exits, perf, create_time, update_time) VALUES ('sub_1', 'u_1',"
                  f" 'w_1', '{WALLET.wallet}', '0x{'f5' * 20}', 'ACTIVE', 'LIVE', '{{}}', '{{}}', '{{}}', '{{}}',"
                  " '{}', now(), now())")


class CountingVenue:
    """Holds nothing; counts the times it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def positions(self, wallet_id: str) -> Answer:
        self.calls += 1
        return Answer(200, {"positions": []})


async def test_a_round_before_a_wake_is_due_leaves_the_wake(db_url: str) -> None:
    """A wallet asked for in 0.5 s (a LOST order: its count after the settling grace) and reconciled by its periodic
    round before then is reconciled again when the wake is due: the round's count may lack the order's sale."""
    _live_subscription(db_url)
    pool = await create_pool(db_url, autocommit=True)
    venue = CountingVenue()
    rec = Reconciler(ReconcileStore(pool), venue, None, interval_s=300.0, known=_known, grace_s=0.5)
    rec.soon("w_1", 0.5)
    task = asyncio.create_task(rec.run())
    try:
        await eventually(lambda: venue.calls >= 1)  # the start's round, ahead of the wake
        await eventually(lambda: venue.calls >= 2, timeout_s=5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()
