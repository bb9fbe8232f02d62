"""A failed or uncertain redemption is retried on its own, with the same Idempotency-Key, for as long as it takes.

Before: a 408 or a 409 to the POST (a timeout the venue answered; the key's first request still in progress after
our own timeout) ended the redemption FAILED for good although a retry with the same key redeems it; a 5xx, a
timeout or the breaker open, to the POST or to the status queries, was retried for ever with no alert (the winnings
sat unredeemed in silence for as long as the venue kept failing). Giving such a run up (FAILED) instead would leave
the winnings unredeemed after the venue is back, until a person acts. Now a run of failures that crosses its bound
(its N-th failure in a row, or its first at or past its age) is alerted once, stays PENDING or SUBMITTED (reason
``REDEMPTION_OVERDUE``) and is retried every (the backoff's maximum) until an answer ends it; the crossing is stored,
so a restart does not alert the same run again. Real PostgreSQL and Redis, the Insiders fake over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace

import pytest

from common.alerts import ALERTS_STREAM, FIELD, Alert
from common.retry import Backoff
from services.executor import app
from services.executor.domain.redemption import OVERDUE
from services.executor.redeeming import redeem_retry
from sim.httpserve import Request, Response, json_response
from sim.insiders import InsidersFake
from sim.redemptions import RedeemRecord
from tests.executor.conftest import ASSET, CONDITION, TERMINAL_TYPES, Harness, make_order, rows, running_harness
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

NO = "2" * 77
FAST = Backoff(0.05, 0.2)
NO_BREAKER = "1000"  # TT_TUNE_EXECUTOR_BREAKER_THRESHOLD: every failure reaches the venue


class InProgressFake(InsidersFake):
    """Answers a replayed key ``409`` while ``conflicts`` last (its first request still in progress)."""

    conflicts = 1

    def _redeem(self, request: Request, param: str) -> Response | Awaitable[Response]:
        key = request.headers.get("idempotency-key", "")
        if key in self.holdings.by_key and self.conflicts > 0:
            self.conflicts -= 1
            self.holdings.records.append(RedeemRecord(key, "", "", 409, "conflict", request.arrival_ns))
            return json_response({"error": "IDEMPOTENCY_KEY_IN_USE", "message": "in progress"}, 409)
        return super()._redeem(request, param)


class StatusFailingFake(InsidersFake):
    """Answers every status query ``503`` while ``failing``."""

    failing = False

    def _get_redeem(self, request: Request, redeem_id: str) -> Response:
        if not self.failing:
            return super()._get_redeem(request, redeem_id)
        self.redeem_queries += 1
        return json_response({"error": "SERVICE_UNAVAILABLE", "message": "down"}, 503)


async def _bought_and_resolved(harness: Harness, *, settle_s: float | None = None) -> None:
    await harness.set_book(ASSET, [("0.39", "100000")], [("0.40", "100000")])
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes"), (NO, "No")])
    order = make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40")
    await harness.route(order)

    async def ended() -> epb.OrderEvent | None:
        return await harness.terminal(order.client_order_id)

    ev: epb.OrderEvent | None = await eventually(ended, timeout_s=20)
    assert ev is not None and ev.type == epb.ORDER_EVENT_TYPE_FILLED and ev.type in TERMINAL_TYPES
    if settle_s is not None:
        harness.fake.settle_s = settle_s
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(mpb.MarketResolution(
        condition_id=CONDITION, asset_ids=[ASSET, NO], winning_asset_id=ASSET,
        source=mpb.RESOLUTION_SOURCE_CLOB_SOCKET, received_time_ns=time.time_ns()).SerializeToString())


async def _alerts(harness: Harness) -> list[dict[str, str]]:
    """The fields (and dedupe id) of the REDEMPTION_OVERDUE alerts on the alert stream."""
    entries = await harness.sredis.xrange(ALERTS_STREAM) or []
    alerts = [Alert.from_json(fields[FIELD]) for _, fields in entries if fields]
    return [{**a.fields, "dedupe_id": a.dedupe_id} for a in alerts if a.kind == "REDEMPTION_OVERDUE"]


async def _alerted(harness: Harness) -> list[dict[str, str]]:
    """The REDEMPTION_OVERDUE alerts' fields once there is one."""

    async def some() -> list[dict[str, str]]:
        return await _alerts(harness)

    return await eventually(some)


def _state(harness: Harness) -> list[tuple[str, str]]:
    return rows(harness.db_url, "SELECT state, reason FROM redemptions")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor's redemption retries as tuned, their backoff short (its maximum spacing 0.2 s)."""
    monkeypatch.setattr(app, "redeem_retry", lambda settings: replace(redeem_retry(settings), backoff=FAST))


def _failures(harness: Harness) -> int:
    """The redemption's failures in a row (0 before it is recorded)."""
    return sum(int(n) for (n,) in rows(harness.db_url, "SELECT failures FROM redemptions"))


def _overdue_since(harness: Harness) -> tuple[object, object]:
    [(since, overdue)] = rows(harness.db_url, "SELECT failing_since, overdue_since FROM redemptions")
    return since, overdue


@pytest.fixture
async def in_progress(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(redis_url, db_url, fake=InProgressFake) as h:
        yield h


@pytest.fixture
async def status_failing(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(redis_url, db_url, fake=StatusFailingFake) as h:
        yield h


async def test_a_replay_answered_409_while_the_first_post_is_in_progress_is_retried_and_redeems_once(
        in_progress: Harness) -> None:
    h = in_progress
    await h.start_executor(TT_TUNE_EXECUTOR_QUERY_TIMEOUT_S="0.5")
    h.fake.faults.timeout_redeems, h.fake.faults.timeout_delay_s = 1, 3.0  # taken, its answer late
    await _bought_and_resolved(h)
    await eventually(lambda: _state(h) == [("CONFIRMED", "")], timeout_s=30)
    records = h.fake.holdings.records
    assert [r.outcome for r in records] == ["timeout", "conflict", "replayed"]
    assert len({r.key for r in records}) == 1  # one Idempotency-Key throughout
    assert h.fake.holdings.taken() == {f"w_1|{CONDITION}": 1}
    assert rows(h.db_url, "SELECT state FROM positions") == [("REDEEMED",)]
    assert await _alerts(h) == []


async def test_a_post_answered_408_is_retried_with_the_same_key(harness: Harness) -> None:
    await harness.start_executor()
    harness.fake.faults.fail_status, harness.fake.faults.fail_redeems = 408, 1
    await _bought_and_resolved(harness)
    await eventually(lambda: _state(harness) == [("CONFIRMED", "")], timeout_s=30)
    assert [r.outcome for r in harness.fake.holdings.records] == ["fault", "created"]
    assert rows(harness.db_url, "SELECT state FROM positions") == [("REDEEMED",)]


async def test_a_venue_failing_every_post_is_alerted_once_at_the_nth_failure_and_retried_until_it_redeems(
        harness: Harness) -> None:
    await harness.start_executor(TT_TUNE_EXECUTOR_BREAKER_THRESHOLD=NO_BREAKER,
                                 TT_TUNE_EXECUTOR_REDEEM_OVERDUE_FAILURES="4")
    harness.fake.faults.fail_redeems = 1000  # every redeem answered 503
    await _bought_and_resolved(harness)
    await eventually(lambda: _failures(harness) >= 10, timeout_s=30)  # retried on, well past the crossing
    assert _state(harness) == [("PENDING", OVERDUE)]
    [alert] = await _alerted(harness)
    assert alert["reason"] == OVERDUE and alert["call"] == "redeem" and alert["failures"] == "4"
    assert "crossed its bound of 4 failures" in alert["detail"]
    harness.fake.faults.fail_redeems = 0  # the venue is back
    await eventually(lambda: _state(harness) == [("CONFIRMED", "")], timeout_s=30)
    records = harness.fake.holdings.records
    assert len({r.key for r in records}) == 1 and [r.outcome for r in records][-1] == "created"
    assert harness.fake.holdings.taken() == {f"w_1|{CONDITION}": 1}
    assert rows(harness.db_url, "SELECT state FROM positions") == [("REDEEMED",)]
    assert len(await _alerts(harness)) == 1


async def test_a_run_of_failures_is_alerted_once_at_its_age_and_retried_on(harness: Harness) -> None:
    await harness.start_executor(TT_TUNE_EXECUTOR_BREAKER_THRESHOLD=NO_BREAKER,
                                 TT_TUNE_EXECUTOR_REDEEM_OVERDUE_FAILURES="10000",
                                 TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S="1.5")
    harness.fake.faults.fail_redeems = 100_000
    await _bought_and_resolved(harness)
    await eventually(lambda: _state(harness) == [("PENDING", OVERDUE)], timeout_s=30)
    crossed_at = _failures(harness)
    await eventually(lambda: _failures(harness) >= crossed_at + 5, timeout_s=30)
    [(span,)] = rows(harness.db_url, "SELECT extract(epoch FROM overdue_since - failing_since) FROM redemptions")
    assert 1.5 <= float(span) < 5
    assert _state(harness) == [("PENDING", OVERDUE)]
    [alert] = await _alerted(harness)
    assert "crossed its bound of 1.5 s" in alert["detail"]


async def test_an_overdue_run_is_not_alerted_again_after_a_restart_and_redeems_once_the_venue_is_back(
        harness: Harness) -> None:
    await harness.start_executor(TT_TUNE_EXECUTOR_BREAKER_THRESHOLD=NO_BREAKER,
                                 TT_TUNE_EXECUTOR_REDEEM_OVERDUE_FAILURES="3")
    harness.fake.faults.fail_redeems = 1000
    await _bought_and_resolved(harness)
    await eventually(lambda: _failures(harness) >= 5, timeout_s=30)
    assert len(await _alerted(harness)) == 1
    assert harness.executor is not None
    await harness.executor.stop(0)
    marks, before = _overdue_since(harness), _failures(harness)
    running = await harness.start_executor(TT_TUNE_EXECUTOR_BREAKER_THRESHOLD=NO_BREAKER,
                                           TT_TUNE_EXECUTOR_REDEEM_OVERDUE_FAILURES="3")
    assert running.redeemer is not None
    await eventually(lambda: _failures(harness) >= before + 5, timeout_s=30)  # retried on after the restart
    assert _state(harness) == [("PENDING", OVERDUE)] and _overdue_since(harness) == marks
    harness.fake.faults.fail_redeems = 0
    await eventually(lambda: _state(harness) == [("CONFIRMED", "")], timeout_s=30)
    assert running.redeemer.overdue_alerts == 0  # the restarted executor raised none
    assert len(await _alerts(harness)) == 1
    records = harness.fake.holdings.records
    assert len({r.key for r in records}) == 1 and harness.fake.holdings.taken() == {f"w_1|{CONDITION}": 1}
    assert rows(harness.db_url, "SELECT state FROM positions") == [("REDEEMED",)]


async def test_a_run_that_ends_lets_the_next_run_cross_on_its_own(status_failing: Harness) -> None:
    """A POST run crosses; the venue takes it (the run ends); its status queries then fail: a second alert."""
    h = status_failing
    await h.start_executor(TT_TUNE_EXECUTOR_BREAKER_THRESHOLD=NO_BREAKER, TT_TUNE_EXECUTOR_REDEEM_OVERDUE_FAILURES="3")
    h.fake.faults.fail_redeems = 1000
    await _bought_and_resolved(h, settle_s=3600.0)  # once taken, the venue keeps it `submitted`
    await eventually(lambda: _failures(h) >= 4, timeout_s=30)
    assert [a["call"] for a in await _alerted(h)] == ["redeem"]
    h.fake.failing = True  # type: ignore[attr-defined]
    h.fake.faults.fail_redeems = 0
    await eventually(lambda: _state(h) == [("SUBMITTED", OVERDUE)] and _failures(h) >= 5, timeout_s=30)
    assert [r.outcome for r in h.fake.holdings.records][-1] == "created"  # the POST is not sent again once taken

    async def two() -> list[dict[str, str]]:
        alerts = await _alerts(h)
        return alerts if len(alerts) == 2 else []

    both: list[dict[str, str]] = await eventually(two)
    first, second = both
    assert second["call"] == "status" and second["redeem_id"] and second["dedupe_id"] != first["dedupe_id"]
    h.fake.failing, h.fake.settle_s = False, 0.0  # type: ignore[attr-defined]
    await eventually(lambda: _state(h) == [("CONFIRMED", "")], timeout_s=30)
    assert len(await _alerts(h)) == 2
