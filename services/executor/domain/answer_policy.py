"""How the executor reads venue answers: retry classification and the events each answer implies (pure)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import fmt
from services.executor.domain import venue_orders as v
from services.executor.domain.order_lifecycle import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFailed,
    OrderFilled,
    OrderLife,
    OrderLost,
    OrderNotFound,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    OrderTimedOut,
    State,
    SubmitAttemptFailed,
)

NON_RETRYABLE_CODES = frozenset({
    "INVALID_ORDER_MIN_SIZE", "INVALID_ORDER_MIN_TICK_SIZE", "INVALID_ORDER_NOT_ENOUGH_BALANCE",
    "FOK_ORDER_NOT_FILLED_ERROR", "MARKET_CLOSED", "INVALID_ORDER_DUPLICATED",
})
# Rejections that mean the router's cached market rules were stale: drop ``tt:market:{asset}``.
INVALIDATES_MARKET = frozenset({"INVALID_ORDER_MIN_TICK_SIZE", "INVALID_ORDER_MIN_SIZE", "MARKET_CLOSED"})
NOT_FOUND_CODE = "ORDER_NOT_FOUND"
DUPLICATED = "INVALID_ORDER_DUPLICATED"
# 5xx a proxy in front of the venue's backend answers when it lost or waited out the backend's answer (502 Bad
# Gateway, 504 Gateway Timeout; Cloudflare's 520 unknown answer and 524 timeout; 598/599 network read timeouts):
# the backend may have taken the order, as after a timeout of our own. A 5xx whose code says timeout reads the same.
GATEWAY_UNCERTAIN = frozenset({502, 504, 520, 524, 598, 599})


class Verdict(enum.Enum):
    """What to do with a venue answer."""

    OK = "OK"  # an order came back
    RETRY = "RETRY"  # try again (same Idempotency-Key), behind the breaker
    REJECT = "REJECT"  # refused for good
    NOT_FOUND = "NOT_FOUND"  # a status query found nothing
    SETTLE = "SETTLE"  # outcome unknowable from this answer (timeout): settle it with a status query


@dataclass(frozen=True, slots=True)
class Classification:
    """A venue answer read for retries, the breaker and the market cache."""

    verdict: Verdict
    reason: str = ""
    venue_may_hold: bool = False  # the venue might have taken the order despite the error
    breaker_failure: bool = False  # counts towards opening the circuit breaker
    invalidate_market: bool = False
    answered: bool = False  # the venue refused with a retryable error (500/503/425/429): not found later = not taken
    key_known: bool = False  # the venue says it knows the order's key (409, INVALID_ORDER_DUPLICATED): it may hold it

    @property
    def uncertain(self) -> bool:
        """The call ended without a definite answer while the venue may have the order (a dropped connection, a
        timeout, an unreadable answer, a gateway's 502/504)."""
        return self.venue_may_hold and not self.answered


def classify(result: v.VenueResult) -> Classification:
    """Classify one venue answer (POST or GET)."""
    if isinstance(result, v.VenueOrder):
        return Classification(Verdict.OK)
    kind, status, code = result.kind, result.http_status, result.code
    if kind == "timeout":
        return Classification(Verdict.SETTLE, "VENUE_TIMEOUT", venue_may_hold=True, breaker_failure=True)
    if kind == "disconnect":
        return Classification(Verdict.RETRY, "VENUE_DISCONNECTED", venue_may_hold=True, breaker_failure=True)
    if kind == "connect":
        return Classification(Verdict.RETRY, "VENUE_UNREACHABLE", breaker_failure=True)
    if kind == "protocol":
        return Classification(Verdict.SETTLE, _code(code) or "VENUE_BAD_RESPONSE", venue_may_hold=True)
    if 200 <= status < 300:  # a success (201 Created, 202 Accepted) not read as an order: the venue took it
        return Classification(Verdict.SETTLE, f"VENUE_HTTP_{status}", venue_may_hold=True)
    if status == 425:
        return Classification(Verdict.RETRY, "VENUE_TOO_EARLY", breaker_failure=True, answered=True)
    if status == 429:
        return Classification(Verdict.RETRY, "VENUE_RATE_LIMITED", breaker_failure=True, answered=True)
    if status >= 500:  # a gateway's (or a timeout's) answer says nothing of the backend: uncertain, like a timeout
        return Classification(Verdict.RETRY, f"VENUE_HTTP_{status}", venue_may_hold=True, breaker_failure=True,
                              answered=not gateway_uncertain(status, code))
    if status == 404 and code == NOT_FOUND_CODE:  # a bare 404 (a proxy, a wrong path) says nothing of the order
        return Classification(Verdict.NOT_FOUND, NOT_FOUND_CODE)
    if status in (401, 403):
        return Classification(Verdict.REJECT, "VENUE_UNAUTHORIZED")
    if code in NON_RETRYABLE_CODES:
        return Classification(Verdict.REJECT, code, invalidate_market=code in INVALIDATES_MARKET,
                              key_known=code == DUPLICATED)
    if status == 409:  # a replayed Idempotency-Key whose first request is in progress (or was taken)
        return Classification(Verdict.REJECT, _code(code) or "VENUE_HTTP_409", key_known=True)
    return Classification(Verdict.REJECT, _code(code) or f"VENUE_HTTP_{status}")


def gateway_uncertain(status: int, code: str) -> bool:
    """Whether a 5xx answer may hide the backend having taken the order: a gateway's error or timeout."""
    if status in GATEWAY_UNCERTAIN:
        return True
    upper = code.upper()
    return "TIMEOUT" in upper or "TIMED_OUT" in upper


def _code(code: str) -> str:
    cleaned = "".join(c for c in code.upper() if c.isalnum() or c == "_")[:64]
    return cleaned


IMPLAUSIBLE_FILL = "VENUE_IMPLAUSIBLE_FILL"


def fill_bound(request: v.PlaceRequest | None) -> Decimal | None:
    """The most shares ``request`` can fill: its size (a SELL, a GTC BUY), else its USD at the lowest price any
    share trades for (a tick change may have made the market's grid finer since it was priced); None: unbounded."""
    if request is None:
        return None
    if request.size is not None:
        return request.size
    if request.amount_usd is not None:
        return request.amount_usd / v.LOWEST_PRICE
    return None


def implausible_fill(request: v.PlaceRequest | None, order: v.VenueOrder) -> str:
    """Why ``order`` (an answer about ``request``) reports a fill the order cannot have made ("" when it can)."""
    bound = fill_bound(request)
    if order.filled_size < 0 or (bound is not None and order.filled_size > bound):
        return f"filledSize {fmt(order.filled_size)} outside [0, {fmt(bound) if bound is not None else 'any'}]"
    return ""


def decide_submit(life: OrderLife, c: Classification, *, max_attempts: int, may_retry_now: bool,
                  venue_may_hold_already: bool) -> list[Event]:
    """Events after one POST attempt of an order in SUBMITTING (the accepted case is :func:`accepted`).

    ``may_retry_now`` is False when the breaker refuses another attempt; ``venue_may_hold_already``
    says an earlier attempt of this order may have reached the venue (as ``life.post_uncertain`` does). Such an
    order is never rejected by a refusal of this attempt, which says nothing of the earlier one: it is settled by
    status query (``INVALID_ORDER_DUPLICATED`` or a 409: the venue says it knows it; any other: it may). A first
    POST answered so is settled by query too: the key the venue knows can only be this order's.
    """
    # a first POST answered 409 / INVALID_ORDER_DUPLICATED: the intent was recorded before the POST and the client
    # never resends, so the key the venue knows is this order's (a gateway's replay, another executor)
    may_hold = venue_may_hold_already or c.venue_may_hold or life.post_uncertain or c.key_known
    if c.verdict in (Verdict.REJECT, Verdict.NOT_FOUND):  # a POST answered 404: the route refused, a rejection
        reason = c.reason if c.verdict is Verdict.REJECT else "VENUE_HTTP_404"
        if not may_hold:
            return [OrderRejected(reason)]
        # answered: whether the order is uncertain for good is the earlier attempts' to say (post_uncertain),
        # but a duplicate or a conflict is the venue saying it knows the order: never "not taken"
        return [OrderTimedOut(reason, answered=not c.key_known)]
    if c.verdict is Verdict.SETTLE:
        return [OrderTimedOut(c.reason)]
    # RETRY
    if life.attempts < max_attempts and may_retry_now:
        return [SubmitAttemptFailed(c.reason, uncertain=c.uncertain)]
    if may_hold or c.answered:  # settle by query; a not-found then re-POSTs within the resubmit window
        return [OrderTimedOut(c.reason, answered=c.answered)]
    if not may_retry_now:
        return [OrderFailed("BREAKER_OPEN", f"last error {c.reason}")]
    return [OrderFailed("RETRIES_EXHAUSTED", f"{life.attempts} attempts, last error {c.reason}")]


def accepted(life: OrderLife, order: v.VenueOrder) -> list[Event]:
    """Events when the venue returns the order to a SUBMITTING or UNKNOWN order: accepted, then its status."""
    first: list[Event] = [OrderAccepted(order.order_id, order.status)]
    placed = OrderLife(life.client_order_id, State.PLACED, order.order_id, order.status,
                       filled_size=life.filled_size, avg_price=life.avg_price)
    return first + decide_status(placed, order)


def decide_status(life: OrderLife, order: v.VenueOrder) -> list[Event]:
    """Events implied by a status of a PLACED or PARTIALLY_FILLED order (empty when nothing changed).

    Fills are booked when the venue says they are final (``confirmed``), when a resting order's
    matched size grows (``live``), or when the order ends ``cancelled`` with something matched. A status word the
    contract does not list (:func:`unlisted_since`) implies nothing: the order is asked again, never ended on a guess.
    """
    status = order.status
    fs = max(order.filled_size, life.filled_size)
    ap = order.avg_price if order.filled_size >= life.filled_size else life.avg_price
    if status == v.FAILED:
        return [OrderFailed("VENUE_FAILED", f"venue order {order.order_id} failed")]
    if status == v.CONFIRMED:
        return [OrderFilled(fs, ap)] if fs > 0 else [OrderCancelled("NOT_FILLED")]
    if status == v.CANCELLED:
        return [OrderCancelled("VENUE_CANCELLED" if fs > 0 else "NOT_FILLED", fs, ap)]
    if status == v.LIVE and order.filled_size > life.filled_size:
        return [OrderPartiallyFilled(fs, ap)]
    return []


RESTART_REASON = "EXECUTOR_RESTARTED"


def decide_unknown(life: OrderLife, c: Classification, *, lost_after: int,
                   resubmit_allowed: bool) -> list[Event]:
    """Events after a status query of an UNKNOWN order that did not return the order.

    ``lost_after`` consecutive not-found settle it: while ``resubmit_allowed`` (the order is young enough
    to still be worth sending) it is POSTed again with the same Idempotency-Key, which the venue answers
    with the order it already has, if it has it (a timed-out POST it is still processing included);
    past that, it is FAILED (not taken) only when its last attempt was answered with an error and no POST
    of it ever ended without a definite answer (``OrderLife.not_taken_if_not_found``); anything else is
    LOST: the venue may still hold it. (``RESTART_REASON``: an order a previous release restarted, stored
    without ``post_uncertain``.)
    """
    if c.verdict is not Verdict.NOT_FOUND:
        return []  # transient error: ask again later; it does not count as not-found
    if life.not_found + 1 < lost_after:
        return [OrderNotFound()]
    if resubmit_allowed:
        return [OrderNotFound(), OrderSubmitted()]
    if life.not_taken_if_not_found and life.detail != RESTART_REASON:
        return [OrderNotFound(), OrderFailed("VENUE_UNAVAILABLE",
                                             f"not taken after {life.detail}; resubmit window over")]
    return [OrderNotFound(), OrderLost("VENUE_NOT_FOUND")]


PLACED_NOT_FOUND = "PLACED_ORDER_NOT_FOUND"


@dataclass(frozen=True, slots=True)
class Missing:
    """A placed order the venue no longer finds: status queries in a row that found it neither by its venue
    order id nor by its client order id, and when the first of them was answered (ms, monotonic clock)."""

    count: int
    since_ms: int


def missed(before: Missing | None, now_ms: int) -> Missing:
    """``before`` after one more status query that found nothing."""
    return Missing(1, now_ms) if before is None else Missing(before.count + 1, before.since_ms)


def decide_placed_missing(missing: Missing, now_ms: int, *, lost_after: int, lost_after_s: float) -> list[Event]:
    """Events for a PLACED or PARTIALLY_FILLED order that the venue no longer finds: LOST (its fills so far
    stay booked, the rest of its reservation is released) once ``lost_after`` queries in a row found
    nothing over at least ``lost_after_s`` (a venue that briefly cannot see an order it just took must not
    lose it); nothing before that, and nothing ever when ``lost_after_s`` is 0 (queried for good)."""
    waited_ms = now_ms - missing.since_ms
    if lost_after_s <= 0 or missing.count < lost_after or waited_ms < lost_after_s * 1000:
        return []
    return [OrderLost(PLACED_NOT_FOUND, f"not found by {missing.count} status queries over {waited_ms // 1000} s")]


@dataclass(frozen=True, slots=True)
class Unlisted:
    """An order the venue has been answering with status words the contract does not list: since when (ms, a
    monotonic clock) and the last such word."""

    since_ms: int
    status: str


def unlisted_since(before: Unlisted | None, status: str, now_ms: int) -> Unlisted | None:
    """``before`` after one more answer with ``status``: None once a listed word comes back (the streak ends)."""
    if status in v.LISTED:
        return None
    return Unlisted(now_ms if before is None else before.since_ms, status)


def unlisted_too_long(streak: Unlisted, now_ms: int, *, after_s: float) -> bool:
    """Whether an order stayed in unlisted statuses for at least ``after_s``: long enough for a person to look (it
    holds its reservation while it is asked again)."""
    return now_ms - streak.since_ms >= after_s * 1000
