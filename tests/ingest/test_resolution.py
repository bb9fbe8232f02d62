"""Pure resolution rules: clear winners on the socket and on REST, and the safety net's schedule."""

from __future__ import annotations

import copy
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.marketstate import OUTCOME_INDEX, MarketInfo
from services.ingest import clob
from services.ingest import resolution as rs
from services.ingest.model import ParseError
from tradingtools.market.v1 import market_pb2 as mpb

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).parents[2] / ".." / "shared" / "polymarket" / "fixtures"
RESOLVED = orjson.loads((FIXTURES / "clob_market_rest_resolved.json").read_bytes())
OPEN_MARKET = orjson.loads((FIXTURES / "clob_market_rest.json").read_bytes())
FRAME = orjson.loads((FIXTURES / "clob_market_resolved.json").read_bytes())
CID = RESOLVED["condition_id"]
YES, NO = (t["token_id"] for t in RESOLVED["tokens"])
INFO = MarketInfo(YES, CID, Decimal("0.01"), Decimal(5), neg_risk=True, market_slug="fixture-market",
                  extra={"outcome": "Yes", OUTCOME_INDEX: "0"})
INFO_NO = replace(INFO, asset_id=NO, extra={"outcome": "No", OUTCOME_INDEX: "1"})
INFOS = {YES: INFO, NO: INFO_NO}  # as ingest caches a CLOB REST market: Yes is outcome 0, No outcome 1


def info(asset_id: str, index: str | None, condition_id: str = CID) -> MarketInfo:
    """A cached market info of ``asset_id`` (``index``: its outcome index, None: not cached)."""
    return MarketInfo(asset_id, condition_id, Decimal("0.01"), Decimal(5), neg_risk=True,
                      extra={} if index is None else {OUTCOME_INDEX: index})


def frame(**overrides: Any) -> clob.ResolvedMsg:
    msg = clob.parse_event({**FRAME, **overrides})
    assert isinstance(msg, clob.ResolvedMsg)
    return msg


@pytest.mark.parametrize(("overrides", "infos", "verdict"), [
    ({}, INFOS, rs.RESOLVED),
    ({"assets_ids": [NO, YES]}, INFOS, rs.RESOLVED),  # listed the other way round: the cache says which is which
    ({}, {}, rs.NO_MARKET_INFO),  # neg-risk unknown: REST first
    ({}, {YES: MarketInfo(YES, "", Decimal("0.01"), Decimal(5))}, rs.NO_MARKET_INFO),  # a partial entry: no market
    ({}, {YES: info(YES, "0", "0x" + "ab" * 32), NO: info(NO, "1", "0x" + "ab" * 32)}, rs.NO_MARKET_INFO),
    # the outcome index of a token not known for sure: REST first (its order is the index)
    ({}, {YES: INFO}, rs.NO_OUTCOME_ORDER),  # one token's info not cached
    ({}, {YES: info(YES, None), NO: info(NO, None)}, rs.NO_OUTCOME_ORDER),  # cached before the index was kept
    ({}, {YES: INFO, NO: info(NO, None)}, rs.NO_OUTCOME_ORDER),
    ({}, {YES: INFO, NO: info(NO, "1", "0x" + "ab" * 32)}, rs.NO_OUTCOME_ORDER),  # NO's entry names another market
    ({}, {YES: info(YES, "0"), NO: info(NO, "0")}, rs.NO_OUTCOME_ORDER),  # two tokens, one index
    ({}, {YES: info(YES, "0"), NO: info(NO, "2")}, rs.NO_OUTCOME_ORDER),  # the frame is not the whole market
    ({}, {YES: info(YES, "0"), NO: info(NO, "x")}, rs.NO_OUTCOME_ORDER),
    ({"winning_asset_id": ""}, INFOS, rs.NO_CLEAR_WINNER),
    ({"winning_asset_id": "123"}, INFOS, rs.NO_CLEAR_WINNER),  # not one of the market's tokens
    ({"assets_ids": [YES]}, INFOS, rs.NO_CLEAR_WINNER),  # a market has at least two outcomes
    ({"assets_ids": [YES, YES]}, INFOS, rs.NO_CLEAR_WINNER),
    ({"assets_ids": []}, INFOS, rs.NO_CLEAR_WINNER),
    ({"market": "0x1234"}, INFOS, rs.BAD_MARKET),
    ({"market": ""}, INFOS, rs.BAD_MARKET),
])
def test_socket_verdict(overrides: dict[str, Any], infos: dict[str, MarketInfo], verdict: str) -> None:
    assert rs.socket_verdict(frame(**overrides), infos) == verdict


@pytest.mark.parametrize(("frame_order", "indices", "expected"), [
    ([YES, NO], {YES: "0", NO: "1"}, (YES, NO)),
    ([NO, YES], {YES: "0", NO: "1"}, (YES, NO)),  # the frame's order is not the outcome index
    ([YES, NO], {YES: "1", NO: "0"}, (NO, YES)),
    ([NO, YES], {YES: "1", NO: "0"}, (NO, YES)),
])
def test_socket_resolution_lists_the_tokens_in_outcome_index_order_whatever_the_frame_order(
        frame_order: list[str], indices: dict[str, str], expected: tuple[str, ...]) -> None:
    infos = {a: replace(i, extra={OUTCOME_INDEX: indices[a]}) for a, i in INFOS.items()}
    res = rs.socket_resolution(frame(assets_ids=frame_order), infos, 123)
    assert (res.asset_ids, res.winning_asset_id) == (expected, YES)
    assert list(res.to_proto().asset_ids) == list(expected)


def test_socket_resolution_takes_neg_risk_from_the_market_info() -> None:
    msg = frame()
    res = rs.socket_resolution(msg, INFOS, 123)
    assert (res.condition_id, res.asset_ids, res.winning_asset_id, res.winning_outcome) == (CID, (YES, NO), YES, "Yes")
    assert (res.source, res.confirmed, res.neg_risk, res.market_slug, res.venue_ms, res.received_ns) == (
        rs.SOCKET, False, True, "fixture-market", 1767225600800, 123)
    event = res.to_proto("00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert event.source == mpb.RESOLUTION_SOURCE_CLOB_SOCKET and not event.confirmed
    assert list(event.asset_ids) == [YES, NO] and event.trace.traceparent.startswith("00-1")


def test_a_socket_resolution_in_no_known_order_is_refused() -> None:
    with pytest.raises(ValueError, match="NO_OUTCOME_ORDER"):
        rs.socket_resolution(frame(), {YES: INFO}, 123)


@pytest.mark.parametrize(("watched", "expected"), [({YES}, True), ({NO}, True), ({"1"}, False), (set(), False)])
def test_is_watched(watched: set[str], expected: bool) -> None:
    assert rs.is_watched(frame(), watched) is expected


def market(**overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(RESOLVED)
    tokens = overrides.pop("tokens", None)
    if tokens is not None:
        body["tokens"] = tokens
    body.update(overrides)
    return body


def tokens(yes: Any = False, no: Any = True) -> list[dict[str, Any]]:
    return [{"token_id": YES, "outcome": "Yes", "price": 0, "winner": yes},
            {"token_id": NO, "outcome": "No", "price": 1, "winner": no}]


@pytest.mark.parametrize(("body", "verdict", "winner"), [
    (market(), rs.RESOLVED, NO),
    (market(active=False), rs.RESOLVED, NO),  # active is not looked at
    (market(accepting_orders=True), rs.RESOLVED, NO),  # nor accepting_orders
    (market(tokens=tokens(True, False)), rs.RESOLVED, YES),
    (OPEN_MARKET, rs.OPEN, ""),
    (market(closed=False), rs.OPEN, ""),  # a winner flag on an open market means nothing yet
    (market(tokens=tokens(False, False)), rs.NO_CLEAR_WINNER, ""),
    (market(tokens=tokens(True, True)), rs.NO_CLEAR_WINNER, ""),
    (market(tokens=tokens(False, "true")), rs.NO_CLEAR_WINNER, ""),  # only a JSON true is a winner
    (market(tokens=tokens(False, None)), rs.NO_CLEAR_WINNER, ""),
    (market(tokens=tokens()[1:]), rs.NO_CLEAR_WINNER, ""),  # one token: no market to settle
    (market(tokens=[]), rs.NO_CLEAR_WINNER, ""),
    (market(tokens=[tokens()[1], tokens()[1]]), rs.NO_CLEAR_WINNER, ""),
])
def test_rest_verdict(body: dict[str, Any], verdict: str, winner: str) -> None:
    got = rs.rest_verdict(body, CID.upper().replace("0X", "0x"), 5, 7)
    assert got.verdict == verdict
    if verdict == rs.RESOLVED:
        res = got.resolution
        assert res is not None and res.winning_asset_id == winner
        assert (res.condition_id, res.asset_ids, res.source, res.confirmed, res.received_ns) == (
            CID, (YES, NO), rs.REST, True, 7)
        assert (res.neg_risk, res.market_slug, res.winning_outcome) == (True, "fixture-market",
                                                                        "No" if winner == NO else "Yes")
    else:
        assert got.resolution is None


@pytest.mark.parametrize("body", [
    None, [], "closed", market(condition_id="0x" + "ab" * 32), market(condition_id=None),
    market(closed="true"), market(closed=None), market(tokens="x"), market(tokens=[1]),
    market(tokens=[{"token_id": int(YES), "winner": True}, tokens()[1]]), market(minimum_tick_size=2),
])
def test_malformed_rest_markets_raise(body: Any) -> None:
    with pytest.raises(ParseError):
        rs.rest_verdict(body, CID, 5, 7)


@pytest.mark.parametrize(("raw", "ms"), [
    ("2026-01-01T00:00:00Z", 1767225600000), ("2026-01-01T00:00:00+00:00", 1767225600000),
    ("2026-01-01T01:00:00+01:00", 1767225600000), ("2026-01-01T00:00:00", 1767225600000),
    ("2026-01-01", 1767225600000), (None, None), ("", None), ("soon", None), (1767225600, None), ("9" * 50, None),
])
def test_end_date(raw: Any, ms: int | None) -> None:
    assert rs.end_date_ms(raw) == ms


H = 3600.0


@pytest.mark.parametrize(("outcome", "end_s", "closed", "failures", "rand", "expected"), [
    (rs.OPEN, None, False, 3, 0.0, (1000 + H, 0)),  # hourly, failures reset
    (rs.OPEN, None, False, 0, 1.0, (1000 + 0.9 * H, 0)),  # spread: up to 10 % early
    (rs.OPEN, 1200.0, False, 0, 0.0, (1230.0, 0)),  # 30 s after the end date
    (rs.OPEN, 10_000.0, False, 0, 0.0, (1000 + H, 0)),  # end beyond the hour: hourly first
    (rs.OPEN, 990.0, False, 0, 0.0, (1020.0, 0)),  # ended 10 s ago: 30 s after the end
    (rs.OPEN, 900.0, False, 0, 0.0, (1100.0, 0)),  # ended 100 s ago: again 100 s later
    (rs.OPEN, -100_000.0, False, 0, 0.0, (1000 + H, 0)),  # long over: hourly
    (rs.OPEN, None, True, 0, 0.0, (1002.5, 1)),  # a socket said it resolved: REST lags, ask again soon
    (rs.NO_CLEAR_WINNER, None, True, 0, 1.0, (1005.0, 1)),
    (rs.NO_CLEAR_WINNER, None, True, 3, 0.0, (1020.0, 4)),
    (rs.NO_CLEAR_WINNER, None, True, 30, 0.0, (1000 + H / 2, 31)),  # bounded: the interval
    (rs.NO_CLEAR_WINNER, None, True, 30, 1.0, (1000 + H, 31)),
    (rs.FAILED, None, False, 0, 0.0, (1015.0, 1)),
    (rs.MALFORMED, 1200.0, False, 2, 1.0, (1120.0, 3)),
    (rs.FAILED, None, False, 99, 1.0, (1000 + H, 100)),
    (rs.CONTRADICTED, None, True, 0, 0.5, (1000 + H, 0)),
])
def test_next_check(outcome: str, end_s: float | None, closed: bool, failures: int, rand: float,
                    expected: tuple[float, int]) -> None:
    nxt, count = rs.next_check_s(outcome, now_s=1000.0, end_s=end_s, closed=closed, failures=failures,
                                 interval_s=H, rand=rand)
    assert (pytest.approx(nxt), count) == expected


def test_next_check_refuses_a_settled_market() -> None:
    with pytest.raises(ValueError):
        rs.next_check_s(rs.RESOLVED, now_s=0, end_s=None, closed=False, failures=0, interval_s=H, rand=0)


@given(outcome=st.sampled_from([rs.OPEN, rs.NO_CLEAR_WINNER, rs.MALFORMED, rs.FAILED, rs.CONTRADICTED]),
       now=st.floats(0, 2e9), end=st.none() | st.floats(0, 2e9), closed=st.booleans(),
       failures=st.integers(0, 10_000), interval=st.floats(1, H), rand=st.floats(0, 1))
def test_every_market_is_checked_again_within_the_interval(outcome: str, now: float, end: float | None,
                                                           closed: bool, failures: int, interval: float,
                                                           rand: float) -> None:
    nxt, _count = rs.next_check_s(outcome, now_s=now, end_s=end, closed=closed, failures=failures,
                                  interval_s=interval, rand=rand)
    assert now < nxt <= now + interval + 1e-6
    if outcome == rs.OPEN and not closed and end is not None and now < end + rs.GRACE_AFTER_END_S:
        assert nxt <= end + 60  # within a minute after the end date


@pytest.mark.parametrize("name", ["clob_market_rest_closed_2026.json", "clob_market_rest_2024.json"])
def test_conformance_with_recorded_markets(name: str) -> None:
    path = SHARED / name
    if not path.exists():
        pytest.skip("shared fixtures not available")
    body = orjson.loads(path.read_bytes())
    got = rs.rest_verdict(body, body["condition_id"], 1, 2)
    if body["closed"]:  # closed with active true: resolved, the token flagged winner won
        assert got.verdict == rs.RESOLVED and got.resolution is not None
        assert got.resolution.winning_asset_id == next(t["token_id"] for t in body["tokens"] if t["winner"])
        assert got.end_ms is not None
    else:
        assert got.verdict == rs.OPEN


@pytest.mark.parametrize("name", ["clob_market_resolved_docs.json", "clob_market_resolved_variant.json"])
def test_conformance_with_recorded_socket_frames(name: str) -> None:
    path = SHARED / name
    if not path.exists():
        pytest.skip("shared fixtures not available")
    msg = clob.parse_event(orjson.loads(path.read_bytes()))
    assert isinstance(msg, clob.ResolvedMsg) and msg.winning_outcome
    infos = {a: MarketInfo(a, msg.market, Decimal("0.01"), Decimal(5), extra={OUTCOME_INDEX: str(i)})
             for i, a in enumerate(msg.asset_ids)}
    assert rs.socket_verdict(msg, infos) == rs.RESOLVED
    assert rs.socket_verdict(msg, {msg.asset_ids[0]: infos[msg.asset_ids[0]]}) == rs.NO_OUTCOME_ORDER
