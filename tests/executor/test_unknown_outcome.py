"""Once a POST of an order ended without a definite answer (a timeout, a dropped connection, a restart under it), the
venue may hold the order: no later answer may call it "not taken" (FAILED VENUE_UNAVAILABLE). It ends LOST (with the
ORDER_LOST alert) or as the venue says, also when later re-POSTs are answered 5xx, the breaker refuses them, the
resubmit window ends, or the executor restarts in between (the fact is stored with the order)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from common import reservations
from services.executor.adapters.order_store import Change, row_life
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import classify, decide_submit, decide_unknown
from services.executor.recovery import plan_resume
from tests.executor.conftest import running_journal
from tests.executor.scripted_venue import (
    DISCONNECT,
    HANG,
    HTTP_503,
    NOT_FOUND,
    TIMEOUT,
    ScriptedVenue,
    final_life,
    prepared,
    runner,
)
from tests.helpers import eventually

MIGRATION = Path(__file__).resolve().parents[2] / "common" / "migrations" / "0630_order_post_uncertain.sql"
NF3 = [NOT_FOUND] * 3  # the venue's index lags: three not-found in a row


def _outcome(life: lc.OrderLife) -> tuple[str, str]:
    return life.state.value, life.reason


async def test_a_timed_out_post_whose_re_posts_are_answered_503_ends_lost_not_failed() -> None:
    # POST 1 times out; three not-found; the re-POSTs (same key, inside the window) are answered 503; then only
    # transient errors until the resubmit window is over, and not-found after it
    venue = ScriptedVenue([TIMEOUT] + [HTTP_503] * 4, NF3 + [TIMEOUT] * 60)
    r, journal = runner(venue, resubmit_max_age_s=0.3)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert venue.posts == 4  # the first POST and three re-POSTs
    assert _outcome(last) == ("LOST", "VENUE_NOT_FOUND"), last.detail
    assert last.post_uncertain


async def test_a_dropped_connection_then_503s_ends_lost_not_failed() -> None:
    # the connection drops under POST 1 (it may have reached the venue); the retries are answered 503
    venue = ScriptedVenue([DISCONNECT] + [HTTP_503] * 3, [TIMEOUT] * 40)
    r, journal = runner(venue, resubmit_max_age_s=0.2)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert venue.posts == 4
    assert _outcome(last) == ("LOST", "VENUE_NOT_FOUND"), last.detail


async def test_a_breaker_that_refuses_the_re_post_of_a_timed_out_order_does_not_make_it_not_taken() -> None:
    # POST 1 times out (1st breaker failure); the re-POST is answered 503 (2nd: the breaker opens) and its retry
    # waits at the open breaker until the order's age bound, then the order is settled by query
    venue = ScriptedVenue([TIMEOUT, HTTP_503], NF3 + [TIMEOUT] * 30)
    r, journal = runner(venue, breaker_threshold=2, resubmit_max_age_s=0.2, breaker_wait_s=0.2)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert venue.posts == 2
    assert any(c.life.detail == "BREAKER_OPEN" for c in journal.written)
    assert _outcome(last) == ("LOST", "VENUE_NOT_FOUND"), last.detail


async def test_posts_all_answered_503_still_end_failed_not_taken() -> None:
    # every POST was answered: a not-found once the window is over means the venue never took it
    venue = ScriptedVenue([HTTP_503] * 12, NF3 + [TIMEOUT] * 40)
    r, journal = runner(venue, resubmit_max_age_s=0.2)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert venue.posts == 5  # four attempts, then one more after the not-founds (the attempts are used up)
    assert _outcome(last) == ("FAILED", "VENUE_UNAVAILABLE")
    assert not last.post_uncertain


UNK_503 = lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2, maybe_unsent=True, detail="VENUE_HTTP_503")


@pytest.mark.parametrize(("uncertain", "expected"), [
    (False, [lc.OrderNotFound(), lc.OrderFailed("VENUE_UNAVAILABLE",
                                                "not taken after VENUE_HTTP_503; resubmit window over")]),
    (True, [lc.OrderNotFound(), lc.OrderLost("VENUE_NOT_FOUND")]),
])
def test_the_last_not_found_past_the_window_says_not_taken_only_when_no_post_was_uncertain(
        uncertain: bool, expected: list[lc.Event]) -> None:
    life = replace(UNK_503, post_uncertain=uncertain)
    assert decide_unknown(life, classify(NOT_FOUND), lost_after=3, resubmit_allowed=False) == expected


@pytest.mark.parametrize("event", [lc.OrderTimedOut("VENUE_TIMEOUT"), lc.OrderTimedOut("EXECUTOR_ERROR"),
                                   lc.OrderTimedOut("EXECUTOR_RESTARTED", surely_sent=False),
                                   lc.SubmitAttemptFailed("VENUE_DISCONNECTED", uncertain=True)])
def test_an_uncertain_attempt_is_kept_through_re_posts_and_answered_errors(event: lc.Event) -> None:
    life = lc.apply(lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=1), event)
    assert life.post_uncertain
    if life.state is lc.State.UNKNOWN:
        life = lc.apply(lc.apply(life, lc.OrderNotFound()), lc.OrderSubmitted())
    life = lc.apply(life, lc.SubmitAttemptFailed("VENUE_HTTP_503"))
    life = lc.apply(life, lc.OrderTimedOut("VENUE_HTTP_503", answered=True))
    assert life.maybe_unsent and life.post_uncertain and not life.not_taken_if_not_found


def test_answered_errors_alone_leave_the_order_certain() -> None:
    life = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=1)
    for c in (classify(HTTP_503), classify(v.VenueError("http", 429)), classify(v.VenueError("connect")),
              classify(HTTP_503)):  # the fourth attempt, the last
        [event] = decide_submit(life, c, max_attempts=4, may_retry_now=True, venue_may_hold_already=False)
        life = lc.apply(life, event)
    assert life.state is lc.State.UNKNOWN and not life.post_uncertain
    [dropped] = decide_submit(lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=1), classify(DISCONNECT),
                              max_attempts=4, may_retry_now=True, venue_may_hold_already=False)
    assert dropped == lc.SubmitAttemptFailed("VENUE_DISCONNECTED", uncertain=True)


def test_retries_given_up_on_an_uncertain_order_settle_it_by_query_rather_than_fail_it() -> None:
    life = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=4, post_uncertain=True)
    unreachable = classify(v.VenueError("connect"))
    for may_retry in (True, False):  # out of attempts, or the breaker refuses the next one
        events = decide_submit(life, unreachable, max_attempts=4, may_retry_now=may_retry,
                               venue_may_hold_already=False)
        assert events == [lc.OrderTimedOut("VENUE_UNREACHABLE")]


def test_a_restart_under_a_post_makes_the_order_uncertain() -> None:
    p = prepared()
    row = _row(p.ticket, p.life, post_sent_ns=None)
    runs, changes = plan_resume([row], {"INSIDERS"}, lambda _coid: False, time.time_ns())
    [(_ticket, life)] = runs
    assert life.state is lc.State.UNKNOWN and life.maybe_unsent and life.post_uncertain
    assert changes[0].life == life


def _row(ticket: Any, life: lc.OrderLife, **kw: Any) -> dict[str, Any]:
    """An ``orders`` row as PostgreSQL returns it."""
    req = ticket.request
    row = {"client_order_id": life.client_order_id, "state": life.state.value, "venue": ticket.venue,
           "venue_order_id": life.venue_order_id, "venue_status": life.venue_status, "limit_price": life.limit_price,
           "attempts": life.attempts, "not_found": life.not_found, "maybe_unsent": life.maybe_unsent,
           "post_uncertain": life.post_uncertain, "filled_size": life.filled_size, "avg_price": life.avg_price,
           "reason": life.reason, "detail": life.detail, "order_proto": ticket.order.SerializeToString(),
           "side": ticket.side, "order_type": ticket.order_type, "amount_usd": req.amount_usd, "size": req.size,
           "created_at": datetime.now(UTC), "post_sent_ns": None, "fee_shares": 0, "filled_notional": 0,
           "arrival_ns": None}
    row.update(kw)
    return row


# -- across a restart: the fact is read back from PostgreSQL ---------------------------------------------------------


def _stored(db_url: str, coid: str) -> dict[str, Any] | None:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM orders WHERE client_order_id = %s", (coid,)).fetchone()


def _ended(db_url: str, coid: str) -> dict[str, Any] | None:
    """The order's row once it ended LOST or FAILED (None before)."""
    row = _stored(db_url, coid)
    return row if row is not None and row["state"] in ("LOST", "FAILED") else None


@pytest.mark.integration
async def test_a_timed_out_order_restarted_after_its_503_re_posts_ends_lost(db_url: str, redis_url: str) -> None:
    p = prepared()
    coid = p.ticket.client_order_id
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, _sr):
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {coid}
        # before the restart: timed out, not found, re-POSTed and answered 503; then only transient errors
        first = ScriptedVenue([TIMEOUT] + [HTTP_503] * 3, NF3 + [TIMEOUT] * 10_000)
        r1, _ = runner(first, journal, resubmit_max_age_s=30.0)
        r1.start(p.ticket, p.life)

        def unknown_after_503() -> bool:
            row = _stored(db_url, coid)
            return row is not None and row["state"] == "UNKNOWN" and row["detail"] == "VENUE_HTTP_503"
        await eventually(unknown_after_503, timeout_s=5)
        await r1.close()
        row = _stored(db_url, coid)
        assert row is not None and row["maybe_unsent"] and row["post_uncertain"]
        assert row_life(row).post_uncertain
        # after it: too old to be POSTed again, and the venue does not find it
        second = ScriptedVenue([], [])
        r2, _ = runner(second, journal, resubmit_max_age_s=0.0)
        assert await r2.resume(await journal.store.open_orders()) == 1

        row = await eventually(lambda: _ended(db_url, coid), timeout_s=5)
        await r2.close()
    assert (row["state"], row["reason"]) == ("LOST", "VENUE_NOT_FOUND")
    assert second.posts == 0


@pytest.mark.integration
async def test_an_order_restarted_under_its_post_whose_re_posts_are_answered_503_ends_lost(
        db_url: str, redis_url: str) -> None:
    p = prepared()
    coid = p.ticket.client_order_id
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, _sr):
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {coid}
        first = ScriptedVenue([HANG], [])  # the executor stops while POST 1 is out
        r1, _ = runner(first, journal)
        r1.start(p.ticket, p.life)
        await eventually(lambda: first.posts == 1, timeout_s=5)
        await r1.close()
        # after the restart: not found, re-POSTed inside the window and answered 503; the window ends
        second = ScriptedVenue([HTTP_503] * 4, NF3 + [TIMEOUT] * 150)
        r2, _ = runner(second, journal, resubmit_max_age_s=1.0)
        assert await r2.resume(await journal.store.open_orders()) == 1

        row = await eventually(lambda: _ended(db_url, coid), timeout_s=10)
        await r2.close()
    assert second.posts == 3
    assert (row["state"], row["reason"]) == ("LOST", "VENUE_NOT_FOUND")
    assert row["post_uncertain"]



@pytest.mark.integration
async def test_the_migration_counts_every_order_waiting_to_be_settled_as_uncertain(
        db_url: str, redis_url: str) -> None:
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, _sr):
        items = [prepared(i) for i in (1, 2, 3)]
        await journal.store.insert_intents([(p.ticket, p.life) for p in items])
        unknown = lc.apply(items[0].life, lc.OrderTimedOut("VENUE_HTTP_503", answered=True))
        placed = lc.apply(items[1].life, lc.OrderAccepted("io_2", "live"))
        await journal.write([Change(items[0].ticket, unknown), Change(items[1].ticket, placed)])
    assert not any(_stored(db_url, p.ticket.client_order_id)["post_uncertain"] for p in items)  # type: ignore[index]
    with psycopg.connect(db_url, autocommit=True) as conn:  # what an upgrade runs on open orders
        conn.execute(MIGRATION.read_bytes())
    assert [_stored(db_url, p.ticket.client_order_id)["post_uncertain"]  # type: ignore[index]
            for p in items] == [True, False, False]


DUPLICATE = v.VenueError("http", 400, "INVALID_ORDER_DUPLICATED")


@pytest.mark.parametrize(("post_uncertain", "may_hold_already", "expected"), [
    # a re-POST of an order an earlier POST may have left at the venue: the venue says it has it, ask for it
    (True, False, [lc.OrderTimedOut("INVALID_ORDER_DUPLICATED")]),
    (False, True, [lc.OrderTimedOut("INVALID_ORDER_DUPLICATED")]),
    # a first POST refused as a duplicate: the intent was recorded before it and the client never resends, so the
    # key the venue knows is this order's (a gateway's replay, another executor): asked for too
    (False, False, [lc.OrderTimedOut("INVALID_ORDER_DUPLICATED")]),
])
def test_a_duplicate_answer_to_a_re_post_settles_the_order_by_query(
        post_uncertain: bool, may_hold_already: bool, expected: list[lc.Event]) -> None:
    life = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=2, post_uncertain=post_uncertain)
    assert decide_submit(life, classify(DUPLICATE), max_attempts=4, may_retry_now=True,
                         venue_may_hold_already=may_hold_already) == expected
    if expected[0] != lc.OrderRejected("INVALID_ORDER_DUPLICATED"):
        unknown = lc.apply(life, expected[0])
        assert unknown.state is lc.State.UNKNOWN and not unknown.not_taken_if_not_found
