"""Market resolutions, pure: whether a socket frame or a REST market is a clear resolution, and when the REST
safety net checks a market next (time and randomness are passed in).

A clear resolution, by source:

- CLOB socket ``market_resolved``: about a watched asset (else UNWATCHED: ignored, counted), a condition id
  ``0x`` + 64 hex, at least two distinct token ids in ``assets_ids`` and ``winning_asset_id`` one of them (else
  NO_CLEAR_WINNER). It is emitted at once only when the market's cached info says whether it is neg-risk (else
  NO_MARKET_INFO) and in which outcome index each of its tokens is (else NO_OUTCOME_ORDER); either way short,
  it waits for REST like a frame without a winner. The frame's own order is not used: nothing says it is the
  outcome index (its ``outcomes`` labels, when sent, follow ``assets_ids`` and so tell no more), and a neg-risk
  redemption names its shares by outcome index, so a wrong order redeems the losing outcome.
- CLOB REST ``GET /markets/{condition_id}``: the body's ``condition_id`` is the one asked for, ``closed`` is the
  JSON ``true`` (``active`` and ``accepting_orders`` are not looked at: ``closed`` with ``active`` is normal for a
  resolved market), and exactly one of at least two distinct tokens has ``winner: true``. Closed without that:
  NO_CLEAR_WINNER. Not closed: OPEN. A body that does not parse raises ParseError (MALFORMED).
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.clob_rest import DEFAULT_TICK, market_infos, parse_market
from common.marketstate import MarketInfo, outcome_order
from common.retry import Backoff
from services.ingest import clob
from services.ingest import model as m
from tradingtools.market.v1 import market_pb2 as mpb

SOCKET = "CLOB_SOCKET"
REST = "CLOB_REST"
SOURCES = {SOCKET: mpb.RESOLUTION_SOURCE_CLOB_SOCKET, REST: mpb.RESOLUTION_SOURCE_CLOB_REST}

# verdicts and check outcomes (reason codes)
RESOLVED = "RESOLVED"
OPEN = "OPEN"
NO_CLEAR_WINNER = "NO_CLEAR_WINNER"
NO_MARKET_INFO = "NO_MARKET_INFO"
NO_OUTCOME_ORDER = "NO_OUTCOME_ORDER"
UNWATCHED = "UNWATCHED"
BAD_MARKET = "BAD_MARKET"
MALFORMED = "MALFORMED"
FAILED = "FAILED"
CONTRADICTED = "CONTRADICTED"

_CONDITION = re.compile(r"^0x[0-9a-f]{64}$")

# the safety net's schedule
GRACE_AFTER_END_S = 30.0  # first check this long after end_date_iso (within the minute the contract asks)
SPREAD = 0.1  # a regular check comes up to this share of the interval early, so checks do not bunch up
AWAITING_WINNER = Backoff(5.0, 3600.0)  # closed without a clear winner: 2.5–5 s, 5–10 s... up to the interval
FAILING = Backoff(30.0, 3600.0)  # HTTP errors and malformed answers: 15–30 s, 30–60 s... up to the interval


@dataclass(frozen=True, slots=True)
class Resolution:
    """One market's resolution as ingest emits it (``MarketResolution``)."""

    condition_id: str
    asset_ids: tuple[str, ...]  # outcome-index order (as CLOB REST lists the market's tokens), whatever the source
    winning_asset_id: str
    source: str  # SOCKET or REST
    confirmed: bool
    received_ns: int
    winning_outcome: str = ""
    market_slug: str = ""
    neg_risk: bool = False
    venue_ms: int = 0

    def to_proto(self, traceparent: str = "") -> mpb.MarketResolution:
        """The event (``traceparent``: trace context started when it was received)."""
        msg = mpb.MarketResolution(
            condition_id=self.condition_id, asset_ids=list(self.asset_ids), winning_asset_id=self.winning_asset_id,
            winning_outcome=self.winning_outcome, market_slug=self.market_slug, neg_risk=self.neg_risk,
            source=SOURCES[self.source], confirmed=self.confirmed,
            venue_time_ms=self.venue_ms, received_time_ns=self.received_ns)
        if traceparent:
            msg.trace.traceparent = traceparent
        return msg


def valid_condition(condition_id: str) -> bool:
    """A condition id as ingest keys markets: ``0x`` + 64 lower-case hex."""
    return bool(_CONDITION.match(condition_id))


def clear_winner(condition_id: str, asset_ids: tuple[str, ...], winning_asset_id: str) -> bool:
    """A valid market, at least two distinct tokens, the winner one of them."""
    return (valid_condition(condition_id) and len(set(asset_ids)) >= 2 and len(set(asset_ids)) == len(asset_ids)
            and bool(winning_asset_id) and winning_asset_id in asset_ids)


def is_watched(msg: clob.ResolvedMsg, watched: Container[str]) -> bool:
    """Whether a ``market_resolved`` frame is about an asset the book feed follows (else UNWATCHED)."""
    return any(a in watched for a in msg.asset_ids)


def market_info(msg: clob.ResolvedMsg, infos: Mapping[str, MarketInfo | None]) -> MarketInfo | None:
    """The cached info of the frame's first token that names the frame's market (it says whether it is
    neg-risk); ``infos``: token id → its cached market info."""
    for asset_id in msg.asset_ids:
        info = infos.get(asset_id)
        if info is not None and info.condition_id == msg.market:
            return info
    return None


def socket_verdict(msg: clob.ResolvedMsg, infos: Mapping[str, MarketInfo | None]) -> str:
    """RESOLVED, BAD_MARKET, NO_CLEAR_WINNER, NO_MARKET_INFO or NO_OUTCOME_ORDER for a watched ``market_resolved``
    frame; ``infos``: the cached market info of its tokens (token id → info), which must name this market and
    give every token's outcome index."""
    if not valid_condition(msg.market):
        return BAD_MARKET
    if not clear_winner(msg.market, msg.asset_ids, msg.winning_asset_id):
        return NO_CLEAR_WINNER
    if market_info(msg, infos) is None:
        return NO_MARKET_INFO
    if outcome_order(msg.market, msg.asset_ids, infos) is None:
        return NO_OUTCOME_ORDER
    return RESOLVED


def socket_resolution(msg: clob.ResolvedMsg, infos: Mapping[str, MarketInfo | None], received_ns: int) -> Resolution:
    """The resolution of a frame :func:`socket_verdict` found RESOLVED: its tokens in outcome-index order (the
    cached infos' ``outcome_index``), whatever order the frame lists them in."""
    info, order = market_info(msg, infos), outcome_order(msg.market, msg.asset_ids, infos)
    if info is None or order is None:
        raise ValueError(f"market_resolved of {msg.market[:80]!r} is not RESOLVED: {socket_verdict(msg, infos)}")
    return Resolution(msg.market, order, msg.winning_asset_id, SOCKET, False, received_ns,
                      winning_outcome=msg.winning_outcome, market_slug=info.market_slug, neg_risk=info.neg_risk,
                      venue_ms=msg.venue_ms)


@dataclass(frozen=True, slots=True)
class RestVerdict:
    """What a CLOB REST market says: OPEN, NO_CLEAR_WINNER or RESOLVED (with the resolution)."""

    verdict: str
    infos: list[MarketInfo]
    end_ms: int | None
    resolution: Resolution | None = None
    winners: tuple[str, ...] = field(default=())


def rest_verdict(body: Any, condition_id: str, now_ms: int, received_ns: int) -> RestVerdict:
    """Read ``GET /markets/{condition_id}``; raises ParseError when the body is not a market (or another one)."""
    if not isinstance(body, dict):
        raise m.ParseError(m.BAD_SHAPE, "market body must be an object")
    infos = market_infos(now_ms, market=parse_market(body), default_tick=DEFAULT_TICK)
    if m.condition_id(body, "condition_id") != condition_id.lower():
        raise m.ParseError(m.BAD_FIELD, "condition_id is not the market asked for")
    closed = body.get("closed")
    if not isinstance(closed, bool):
        raise m.ParseError(m.BAD_FIELD, "closed must be a boolean")
    end_ms = end_date_ms(body.get("end_date_iso"))
    if not closed:
        return RestVerdict(OPEN, infos, end_ms)
    ids = tuple(i.asset_id for i in infos)
    winners = tuple(i.asset_id for i in infos if i.extra.get("winner") == "1")
    if len(winners) != 1 or not clear_winner(condition_id.lower(), ids, winners[0]):
        return RestVerdict(NO_CLEAR_WINNER, infos, end_ms, winners=winners)
    won = next(i for i in infos if i.asset_id == winners[0])
    res = Resolution(condition_id.lower(), ids, won.asset_id, REST, True, received_ns,
                     winning_outcome=won.extra.get("outcome", ""), market_slug=won.market_slug,
                     neg_risk=won.neg_risk)
    return RestVerdict(RESOLVED, infos, end_ms, res, winners)


def end_date_ms(raw: Any) -> int | None:
    """``end_date_iso`` (``2028-01-01T00:00:00Z``; no zone means UTC) in Unix ms; None when absent or unreadable."""
    if not isinstance(raw, str) or not raw or len(raw) > 40:
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def next_check_s(outcome: str, *, now_s: float, end_s: float | None, closed: bool, failures: int,
                 interval_s: float, rand: float, awaiting: Backoff = AWAITING_WINNER,
                 failing: Backoff = FAILING) -> tuple[float, int]:
    """(when to check a market next, its new count of checks in a row that did not settle it) after a check
    that ended in ``outcome``. ``closed``: a source already said the market closed (a socket frame), so an
    OPEN answer is REST lagging and is asked again soon. ``rand`` is uniform in [0, 1).

    - OPEN: within ``interval_s`` (up to SPREAD of it early), and ``GRACE_AFTER_END_S`` after the end date;
      past the end date, again after as long as it has been since the end (30 s, 1 min, 2 min... up to the
      interval), since an ended market resolves any time now.
    - NO_CLEAR_WINNER (or OPEN on a closed market): the ``awaiting`` backoff; MALFORMED, FAILED: ``failing``.
    - CONTRADICTED: the interval (an operator must look; it is logged each time).
    """
    if outcome == OPEN and not closed:
        nxt = now_s + interval_s * (1 - SPREAD * rand)
        if end_s is not None:
            first = end_s + GRACE_AFTER_END_S
            nxt = min(nxt, first if now_s < first else now_s + max(GRACE_AFTER_END_S, now_s - end_s))
        return nxt, 0
    if outcome in (OPEN, NO_CLEAR_WINNER):
        return now_s + min(interval_s, awaiting.delay(min(failures, 40), rand)), failures + 1
    if outcome in (MALFORMED, FAILED):
        return now_s + min(interval_s, failing.delay(min(failures, 40), rand)), failures + 1
    if outcome == CONTRADICTED:
        return now_s + interval_s, failures
    raise ValueError(f"no next check after {outcome}")
