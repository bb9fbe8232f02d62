"""A redemption the venue took but keeps answering ``submitted`` is alerted once it has waited past its bound.

Before: a SUBMITTED redemption whose status queries kept answering a non-final status (``submitted``, or a word the
contract does not list, read as it) was asked about every poll for ever with no alert: the overdue bound counted
failing calls only, and every such answer reset the run. The winnings might never arrive and nobody heard of it.
Now the wait for its final status is measured from when the venue took it: once it is
``TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S`` old, REDEMPTION_OVERDUE is raised once (``call`` = ``status``), the redemption
stays SUBMITTED (reason ``REDEMPTION_OVERDUE``) and is still polled; the crossing is stored, so a restart does not
alert it again. Real PostgreSQL and Redis, the Insiders fake over HTTP."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.retry import Backoff
from services.executor import app
from services.executor.domain.redemption import OVERDUE
from services.executor.redeeming import redeem_retry
from tests.executor.conftest import CONDITION, Harness, rows
from tests.executor.test_redemption_retry import _alerted, _alerts, _bought_and_resolved, _state
from tests.helpers import eventually

pytestmark = pytest.mark.integration

FAST = Backoff(0.05, 0.2)
OVERDUE_S = "1.5"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor's redemption retries as tuned, their backoff short (its maximum spacing 0.2 s)."""
    monkeypatch.setattr(app, "redeem_retry", lambda settings: replace(redeem_retry(settings), backoff=FAST))


def _marks(harness: Harness) -> tuple[object, object]:
    [(since, overdue)] = rows(harness.db_url, "SELECT failing_since, overdue_since FROM redemptions")
    return since, overdue


async def test_a_redemption_left_submitted_past_its_bound_is_alerted_once_and_still_polled(harness: Harness) -> None:
    h = harness
    await h.start_executor(TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S=OVERDUE_S)
    await _bought_and_resolved(h, settle_s=3600.0)  # taken, then `submitted` for an hour
    await eventually(lambda: _state(h) == [("SUBMITTED", OVERDUE)], timeout_s=30)
    [alert] = await _alerted(h)
    assert alert["call"] == "status" and alert["reason"] == OVERDUE and alert["redeem_id"]
    assert alert["failures"] == "0"  # no call failed: the venue answers, never a final status
    [(waited,)] = rows(h.db_url, "SELECT extract(epoch FROM overdue_since - failing_since) FROM redemptions")
    assert float(OVERDUE_S) <= float(waited) < 10
    asked = h.fake.redeem_queries
    await eventually(lambda: h.fake.redeem_queries >= asked + 3, timeout_s=30)  # polled on
    assert h.fake.holdings.taken() == {f"w_1|{CONDITION}": 1} and len(h.fake.holdings.records) == 1
    assert len(await _alerts(h)) == 1

    assert h.executor is not None
    await h.executor.stop(0)
    marks = _marks(h)
    running = await h.start_executor(TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S=OVERDUE_S)
    assert running.redeemer is not None
    asked = h.fake.redeem_queries
    await eventually(lambda: h.fake.redeem_queries >= asked + 3, timeout_s=30)  # polled on after the restart
    assert _state(h) == [("SUBMITTED", OVERDUE)] and _marks(h) == marks
    assert running.redeemer.overdue_alerts == 0  # the restarted executor raised none

    h.fake.settle_s = 0.0  # the venue confirms it at last
    await eventually(lambda: _state(h) == [("CONFIRMED", "")], timeout_s=30)
    assert rows(h.db_url, "SELECT state FROM positions") == [("REDEEMED",)]
    assert len(await _alerts(h)) == 1


async def test_a_redemption_confirmed_within_its_bound_is_not_alerted(harness: Harness) -> None:
    h = harness
    await h.start_executor(TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S="30")
    await _bought_and_resolved(h, settle_s=2.0)  # `submitted` for 2 s, then confirmed
    await eventually(lambda: _state(h) == [("CONFIRMED", "")], timeout_s=30)
    assert h.fake.redeem_queries >= 1
    assert await _alerts(h) == []
