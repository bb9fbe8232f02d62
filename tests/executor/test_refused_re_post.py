"""A refusal (a 4xx) answered to a re-POST of an order an earlier attempt may have left at the venue says nothing of
that attempt: the order is settled by status query and ends as the venue reports it, or, never found, LOST
``VENUE_NOT_FOUND`` (ORDER_LOST) once its resubmit window is over; a first POST's refusal still rejects at once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import Classification, classify, decide_submit
from tests.executor.scripted_venue import HTTP_503, NOT_FOUND, TIMEOUT, ScriptedVenue, final_life, prepared, runner

FORBIDDEN = v.VenueError("http", 403, "FORBIDDEN", "wallet key not accepted")
MARKET_CLOSED = v.VenueError("http", 400, "MARKET_CLOSED", "market closed")
CONFLICT = v.VenueError("http", 409, "CONFLICT", "busy")
NO_BALANCE = v.VenueError("http", 400, "INVALID_ORDER_NOT_ENOUGH_BALANCE", "not enough")
BARE_404 = v.VenueError("http", 404, "", "no route")
REFUSALS = [FORBIDDEN, MARKET_CLOSED, CONFLICT, NO_BALANCE, BARE_404]
IDS = ["403", "MARKET_CLOSED", "409", "NOT_ENOUGH_BALANCE", "bare-404"]
# the first (timed-out) attempt, once the venue's index shows it: filled
FILLED = v.VenueOrder("io_1", "co_test00001", "confirmed", Decimal("20"), Decimal("0.5"), Decimal("10"),
                      Decimal("20"))


@pytest.mark.parametrize("refusal", REFUSALS, ids=IDS)
async def test_a_timed_out_order_whose_re_post_is_refused_ends_as_the_venue_reports_it(
        refusal: v.VenueError) -> None:
    # POST 1 times out (taken, not in the venue's index yet); three not-found; the re-POST is refused; then the venue
    # shows the first attempt, filled
    venue = ScriptedVenue([TIMEOUT, refusal], [NOT_FOUND] * 3 + [FILLED] * 20)
    r, journal = runner(venue)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert venue.posts == 2
    assert (last.state, last.filled_size) == (lc.State.FILLED, Decimal("20"))
    assert sum(c.booking.size for c in journal.written if c.booking is not None) == Decimal("20")


@pytest.mark.parametrize("refusal", [FORBIDDEN, MARKET_CLOSED], ids=["403", "MARKET_CLOSED"])
async def test_an_uncertain_order_refused_at_every_re_post_and_never_found_ends_lost_with_its_window(
        refusal: v.VenueError) -> None:
    posts: list[v.VenueResult | str] = [TIMEOUT, *[refusal] * 200]
    venue = ScriptedVenue(posts, [])  # every status query: not found
    r, journal = runner(venue, resubmit_max_age_s=0.3)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert (last.state, last.reason, last.post_uncertain) == (lc.State.LOST, "VENUE_NOT_FOUND", True)
    assert 2 <= venue.posts < 200  # re-POSTed within the window only
    assert lc.State.REJECTED not in {c.life.state for c in journal.written}


async def test_an_order_answered_5xx_then_refused_and_never_found_ends_not_taken() -> None:
    # a 5xx was an answer: not found afterwards, the order was not taken (FAILED, no ORDER_LOST)
    posts: list[v.VenueResult | str] = [HTTP_503, *[MARKET_CLOSED] * 200]
    venue = ScriptedVenue(posts, [])
    r, journal = runner(venue, resubmit_max_age_s=0.3)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert (last.state, last.reason, last.post_uncertain) == (lc.State.FAILED, "VENUE_UNAVAILABLE", False)
    assert "MARKET_CLOSED" in last.detail


@pytest.mark.parametrize("refusal", [r for r in REFUSALS if r is not CONFLICT], ids=[i for i in IDS if i != "409"])
async def test_a_first_post_refused_is_rejected_at_once(refusal: v.VenueError) -> None:
    venue = ScriptedVenue([refusal], [FILLED])
    r, journal = runner(venue)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert (last.state, last.reason) == (lc.State.REJECTED, classify(refusal).reason)
    assert (venue.posts, venue.gets) == (1, 0)


async def test_a_first_post_answered_409_is_settled_by_query() -> None:
    # the key the venue knows can only be this order's (its intent was recorded before the POST): it is asked for
    venue = ScriptedVenue([CONFLICT], [FILLED])
    r, journal = runner(venue)
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert (last.state, last.filled_size) == (lc.State.FILLED, Decimal("20"))
    assert venue.posts == 1


SUB2 = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=2)
UNCERTAIN = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=2, post_uncertain=True)
FOUND_404 = classify(v.VenueError("http", 404, "ORDER_NOT_FOUND"))


@pytest.mark.parametrize(("life", "c", "held_before", "expected", "not_taken_if_not_found"), [
    # an attempt ended without an answer: the refusal settles by query, the order stays uncertain (LOST if not found)
    (UNCERTAIN, classify(FORBIDDEN), False, [lc.OrderTimedOut("VENUE_UNAUTHORIZED", answered=True)], False),
    (UNCERTAIN, classify(MARKET_CLOSED), False, [lc.OrderTimedOut("MARKET_CLOSED", answered=True)], False),
    (UNCERTAIN, classify(BARE_404), False, [lc.OrderTimedOut("VENUE_HTTP_404", answered=True)], False),
    (UNCERTAIN, FOUND_404, False, [lc.OrderTimedOut("VENUE_HTTP_404", answered=True)], False),
    # an earlier attempt answered 5xx (the venue may hold it): settled by query; not found, it was not taken
    (SUB2, classify(MARKET_CLOSED), True, [lc.OrderTimedOut("MARKET_CLOSED", answered=True)], True),
    # nothing uncertain: refused for good
    (SUB2, classify(MARKET_CLOSED), False, [lc.OrderRejected("MARKET_CLOSED")], None),
    (SUB2, FOUND_404, False, [lc.OrderRejected("VENUE_HTTP_404")], None),
])
def test_a_refusal_settles_by_query_when_an_earlier_attempt_may_be_at_the_venue(
        life: lc.OrderLife, c: Classification, held_before: bool, expected: list[lc.Event],
        not_taken_if_not_found: bool | None) -> None:
    events = decide_submit(life, c, max_attempts=4, may_retry_now=True, venue_may_hold_already=held_before)
    assert events == expected
    after = lc.apply(life, events[0])
    if not_taken_if_not_found is not None:
        assert after.state is lc.State.UNKNOWN
        assert after.not_taken_if_not_found is not_taken_if_not_found
