"""Hypothesis strategies of malformed feed frames, malformed by construction: every case says how many messages it
holds, each of which a parser must refuse (and count).

A case starts from a valid frame of the documented formats (the fixtures under ``tests/ingest/fixtures``) and
breaks it: a required field removed or given a value no parser may accept (wrong type, out of range, not a
number, not an address...), several at once, the frame's text cut short or made invalid UTF-8, a top level that
is not an object, an array of such messages, a frame beyond the size limit.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

from common.text import storable

FIXTURES = Path(__file__).parent / "fixtures"
MAX_FRAME_BYTES = 4096
FUTURE_S = 10**10  # year 2286: a trade stamped later is in the future whatever the clock says


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


@dataclass(frozen=True)
class Case:
    """A frame (or response body) and how many messages in it must each be refused."""

    raw: bytes
    refused: int
    how: str


Strategy = st.SearchStrategy[Any]

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)
NO_DIGITS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Nd")), max_size=12)
JSON_INT = st.integers(-(2**63), 2**63 - 1)
CONTAINER = st.one_of(st.lists(JSON_INT, max_size=3), st.dictionaries(TEXT, JSON_INT, max_size=2))
NOT_STR = st.one_of(st.booleans(), JSON_INT, st.floats(allow_nan=False, allow_infinity=False), CONTAINER)
HUGE = st.one_of(st.integers(31, 400).map(lambda e: f"1e{e}"), st.integers(65, 90).map(lambda n: "9" * n),
                 st.sampled_from(["NaN", "Infinity", "-Infinity", "sNaN", "1e999"]))
# not a decimal at all; "" is left out (an optional field may be empty)
NOT_A_NUMBER = st.one_of(st.booleans(), CONTAINER, NO_DIGITS.filter(bool), HUGE)
LONG_TEXT = st.integers(2001, 2100).map(lambda n: "x" * n)


def _decimals(**bounds: Any) -> Strategy:
    """Decimals in bounds, as a JSON string, integer or float (whichever way the venue may send them)."""
    values = st.decimals(allow_nan=False, allow_infinity=False, places=4, **bounds)

    def as_json(d: Decimal) -> Strategy:
        return st.sampled_from([str(d), float(d), int(d)] if d == d.to_integral_value() else [str(d), float(d)])
    return values.flatmap(as_json)


def outside(lo: Decimal | None, hi: Decimal | None, *, closed: bool) -> Strategy:
    """Numbers outside [lo, hi] (``closed``) or (lo, hi): below lo / above hi, by at most 10^12."""
    parts = []
    span = Decimal(10**12)
    if lo is not None:
        parts.append(_decimals(min_value=lo - span, max_value=lo).filter(
            lambda v: Decimal(str(v)) < lo if closed else Decimal(str(v)) <= lo))
    if hi is not None:
        parts.append(_decimals(min_value=hi, max_value=hi + span).filter(
            lambda v: Decimal(str(v)) > hi if closed else Decimal(str(v)) >= hi))
    return st.one_of(*parts)


def not_matching(pattern: str) -> Strategy:
    """Anything but a string that (cleaned as the parsers clean text) matches ``pattern``, case-insensitively."""
    regex = re.compile(pattern)
    return st.one_of(NOT_STR, TEXT.filter(lambda s: not regex.fullmatch(storable(s).lower())), LONG_TEXT)


ADDRESS = not_matching(r"0x[0-9a-f]{40}")
TX_HASH = not_matching(r"0x[0-9a-f]{64}")
CONDITION = st.one_of(NOT_STR, TEXT.filter(lambda s: storable(s) != "" and not re.fullmatch(r"0x[0-9a-f]{64}",
                                                                                              storable(s).lower())))
TOKEN = st.one_of(NOT_STR, TEXT.filter(lambda s: not (s.isascii() and s.isdigit() and len(s) <= 80)))
SIDE = st.one_of(NOT_STR, TEXT.filter(lambda s: storable(s).upper() not in ("BUY", "SELL")), LONG_TEXT)
OPTIONAL_SIDE = st.one_of(NOT_STR, TEXT.filter(lambda s: storable(s) != "" and
                                                storable(s).upper() not in ("BUY", "SELL")))
TEXT_FIELD = st.one_of(NOT_STR, LONG_TEXT)  # an optional text field: a string up to 2000 characters, or absent
CLOB_ASSET = st.one_of(NOT_STR, st.just(""), st.integers(101, 140).map(lambda n: "7" * n))
INTEGER = st.one_of(st.booleans(), CONTAINER, NO_DIGITS.filter(bool), HUGE,
                    st.decimals(min_value=-100, max_value=100, places=2, allow_nan=False).filter(
                        lambda d: d != d.to_integral_value()).map(str),
                    st.integers(2**31, 2**40), st.integers(-(2**40), -(2**31) - 1))

# required decimals: absent (None) counts as missing
PRICE = st.one_of(st.none(), NOT_A_NUMBER, outside(Decimal(0), Decimal(1), closed=False))
SIZE = st.one_of(st.none(), NOT_A_NUMBER, outside(Decimal(0), None, closed=False))
SECONDS = st.one_of(st.none(), NOT_A_NUMBER, outside(Decimal(0), None, closed=False),
                    st.integers(FUTURE_S, 2 * FUTURE_S))
LEVEL_PRICE = st.one_of(st.none(), NOT_A_NUMBER, outside(Decimal(0), Decimal(1), closed=True))
LEVEL_SIZE = st.one_of(st.none(), NOT_A_NUMBER, outside(Decimal(0), None, closed=True))
# optional decimals: present and wrong
OPT_PRICE = st.one_of(NOT_A_NUMBER, outside(Decimal(0), Decimal(1), closed=True))
OPT_SIZE = st.one_of(NOT_A_NUMBER, outside(Decimal(0), None, closed=True))
OPT_NUMBER = NOT_A_NUMBER
TICK = st.one_of(NOT_A_NUMBER, outside(Decimal(0), Decimal(1), closed=False))
MILLIS = st.one_of(NOT_A_NUMBER, outside(Decimal(0), Decimal(10**14), closed=False).filter(
    lambda v: Decimal(str(v)) != 0))  # [0, 10^14) are milliseconds


@st.composite
def broken(draw: st.DrawFn, seed: dict[str, Any], fields: dict[str, Strategy], required: tuple[str, ...] = (),
           nested: dict[str, Callable[[Any], Strategy]] | None = None) -> dict[str, Any]:
    """``seed`` with one to three faults: a field of ``fields`` given a value from its strategy, a ``required``
    field removed, or a ``nested`` field (an object or array) broken inside."""
    obj = copy.deepcopy(seed)
    choices = [f"set:{f}" for f in fields] + [f"del:{f}" for f in required] + [f"in:{f}" for f in nested or {}]
    for choice in draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3, unique=True)):
        op, name = choice.split(":", 1)
        if op == "set":
            obj[name] = draw(fields[name])
        elif op == "del":
            obj.pop(name, None)
        else:
            assert nested is not None
            obj[name] = draw(nested[name](obj.get(name)))
    return obj


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


@st.composite
def framed(draw: st.DrawFn, message: Strategy, *, max_bytes: int = MAX_FRAME_BYTES,
           wrap: Callable[[dict[str, Any]], Any] = lambda m: m) -> Case:
    """A frame of broken messages (one, or an array of up to four), or a valid one broken as a whole."""
    how = draw(st.sampled_from(["message", "array", "truncated", "not_utf8", "garbage", "scalar", "scalars",
                                "too_large"]))
    if how == "message":
        return Case(dumps(wrap(draw(message))), 1, how)
    if how == "array":  # each message refused, unless the whole frame is (too large)
        items = draw(st.lists(message, min_size=1, max_size=4))
        raw = dumps([wrap(m) for m in items])
        return Case(raw, 1 if len(raw) > max_bytes else len(items), how)
    text = dumps(wrap(draw(message)))
    if how == "truncated":  # a prefix of an object or array is never JSON
        return Case(text[:draw(st.integers(1, len(text) - 1))], 1, how)
    if how == "not_utf8":
        at = draw(st.integers(0, len(text) - 1))
        return Case(text[:at] + b"\xff" + text[at + 1:], 1, how)
    if how == "garbage":
        return Case(b"\x01" + draw(st.binary(max_size=200)), 1, how)
    if how == "scalar":
        return Case(dumps(draw(st.one_of(st.none(), st.booleans(), JSON_INT, TEXT))), 1, how)
    if how == "scalars":
        items = draw(st.lists(st.one_of(st.none(), st.booleans(), JSON_INT, TEXT, st.lists(JSON_INT, max_size=2)),
                              min_size=1, max_size=4))
        raw = dumps(items)
        return Case(raw, 1 if len(raw) > max_bytes else len(items), how)
    return Case(text + b" " * (max_bytes + 1 - len(text)), 1, how)  # valid JSON, but past the size limit


# --- RTDS ------------------------------------------------------------------------------------------------------

RTDS_PAYLOAD = fixture("rtds_trade_buy_taker_fee.json")["payload"]
RTDS_FIELDS: dict[str, Strategy] = {
    "proxyWallet": st.one_of(st.none(), ADDRESS), "transactionHash": st.one_of(st.none(), TX_HASH),
    "asset": st.one_of(st.none(), TOKEN), "side": st.one_of(st.none(), SIDE), "price": PRICE, "size": SIZE,
    "timestamp": SECONDS, "conditionId": CONDITION, "fee": OPT_NUMBER, "outcomeIndex": INTEGER,
    "title": TEXT_FIELD, "slug": TEXT_FIELD, "eventSlug": TEXT_FIELD, "outcome": TEXT_FIELD,
}
RTDS_REQUIRED = ("proxyWallet", "transactionHash", "asset", "side", "price", "size", "timestamp")


def _rtds_message(payload: Any) -> dict[str, Any]:
    return {"connection_id": "f", "topic": "activity", "type": "trades", "timestamp": 1, "payload": payload}


RTDS_MESSAGE = st.one_of(
    broken(RTDS_PAYLOAD, RTDS_FIELDS, RTDS_REQUIRED).map(_rtds_message),
    st.one_of(st.none(), NOT_STR.filter(lambda v: not isinstance(v, dict)), TEXT).map(_rtds_message),  # no object
    st.just({"topic": "activity", "type": "trades"}),  # no payload
)
RTDS_FRAMES = framed(RTDS_MESSAGE)


# --- CLOB market channel ---------------------------------------------------------------------------------------

BOOK = fixture("clob_book.json")
PRICE_CHANGE = fixture("clob_price_change_v2.json")
LAST_TRADE = fixture("clob_last_trade_price.json")
TICK_SIZE = fixture("clob_tick_size_change.json")
BEST_BID_ASK = fixture("clob_best_bid_ask.json")
CLOB_ASSETS = (BOOK["asset_id"], PRICE_CHANGE["price_changes"][1]["asset_id"])

LEVEL = broken(BOOK["bids"][0], {"price": LEVEL_PRICE, "size": LEVEL_SIZE}, ("price", "size"))


def _levels(current: Any) -> Strategy:
    """A side of a book that cannot be read: not an array, an element that is not an object, a broken level."""
    good = list(current or [])
    return st.one_of(NOT_STR.filter(lambda v: not isinstance(v, list)), TEXT,
                     st.tuples(st.integers(0, len(good)), st.one_of(LEVEL, NOT_STR.filter(
                         lambda v: not isinstance(v, dict)))).map(lambda t: [*good[:t[0]], t[1], *good[t[0]:]]))


CHANGE = broken(PRICE_CHANGE["price_changes"][0],
                {"asset_id": st.one_of(st.none(), CLOB_ASSET), "price": LEVEL_PRICE, "size": OPT_SIZE,
                 "side": st.one_of(st.none(), SIDE), "best_bid": OPT_PRICE, "best_ask": OPT_PRICE},
                ("asset_id", "price", "side"))


def _changes(current: Any) -> Strategy:
    good = list(current or [])
    return st.one_of(st.none(), NOT_STR.filter(lambda v: not isinstance(v, list)), TEXT,
                     st.tuples(st.integers(0, len(good)), st.one_of(CHANGE, NOT_STR.filter(
                         lambda v: not isinstance(v, dict)))).map(lambda t: [*good[:t[0]], t[1], *good[t[0]:]]))


COMMON = {"asset_id": st.one_of(st.none(), CLOB_ASSET), "market": TEXT_FIELD, "timestamp": MILLIS}
CLOB_MESSAGE = st.one_of(
    broken(BOOK, {**COMMON, "tick_size": TICK, "last_trade_price": OPT_PRICE, "min_order_size": OPT_NUMBER},
           ("asset_id",), {"bids": _levels, "asks": _levels}),
    broken(PRICE_CHANGE, {"market": TEXT_FIELD, "timestamp": MILLIS}, ("price_changes",),
           {"price_changes": _changes}),
    broken(LAST_TRADE, {**COMMON, "price": LEVEL_PRICE, "size": OPT_NUMBER, "side": OPTIONAL_SIDE},
           ("asset_id", "price")),
    broken(TICK_SIZE, {**COMMON, "new_tick_size": st.one_of(st.none(), TICK)}, ("asset_id", "new_tick_size")),
    broken(BEST_BID_ASK, {**COMMON, "best_bid": OPT_PRICE, "best_ask": OPT_PRICE}, ("asset_id",)),
    broken(BOOK, {"event_type": st.one_of(st.none(), NOT_STR)}, ("event_type",)),  # no event type at all
)
CLOB_FRAMES = framed(CLOB_MESSAGE)


# --- data-api ---------------------------------------------------------------------------------------------------

ROW = fixture("data_activity_mixed.json")[0]
ROW_FIELDS: dict[str, Strategy] = {
    "proxyWallet": st.one_of(st.none(), ADDRESS), "transactionHash": st.one_of(st.none(), TX_HASH),
    "asset": st.one_of(st.none(), TOKEN), "side": st.one_of(st.none(), SIDE), "price": PRICE, "size": SIZE,
    "timestamp": SECONDS, "conditionId": CONDITION, "usdcSize": OPT_NUMBER, "fee": OPT_NUMBER,
    "outcomeIndex": INTEGER, "title": TEXT_FIELD, "slug": TEXT_FIELD, "eventSlug": TEXT_FIELD,
    "outcome": TEXT_FIELD, "type": st.one_of(NOT_STR, st.integers(41, 60).map(lambda n: "T" * n)),
}
BAD_ROW = st.one_of(broken(ROW, ROW_FIELDS, RTDS_REQUIRED), NOT_STR.filter(lambda v: not isinstance(v, dict)), TEXT)


@st.composite
def data_pages(draw: st.DrawFn) -> Case:
    """A data-api response: rows that are each refused (in an array or a v2 envelope), or a body that is not a
    page at all (refused once)."""
    how = draw(st.sampled_from(["rows", "envelope", "truncated", "not_utf8", "not_a_page", "bad_data"]))
    if how == "not_a_page":
        return Case(dumps(draw(st.one_of(st.booleans(), JSON_INT, TEXT, st.dictionaries(
            TEXT.filter(lambda k: k != "data"), JSON_INT, max_size=3)))), 1, how)
    if how == "bad_data":
        return Case(dumps({"data": draw(st.one_of(st.booleans(), JSON_INT, TEXT, st.dictionaries(TEXT, JSON_INT)))}),
                    1, how)
    rows = draw(st.lists(BAD_ROW, min_size=1, max_size=3))
    if how == "rows":
        return Case(dumps(rows), len(rows), how)
    if how == "envelope":
        return Case(dumps({"data": rows, "pagination": {"has_more": False}}), len(rows), how)
    text = dumps(rows)
    if how == "truncated":
        return Case(text[:draw(st.integers(1, len(text) - 1))], 1, how)
    at = draw(st.integers(0, len(text) - 1))  # not UTF-8
    return Case(text[:at] + b"\xff" + text[at + 1:], 1, how)


# --- CLOB REST ----------------------------------------------------------------------------------------------------

REST_BOOK = fixture("clob_book_rest.json")
REST_MARKET = fixture("clob_market_rest.json")
TOKEN_ENTRY = broken(REST_MARKET["tokens"][0], {"token_id": st.one_of(st.none(), TOKEN), "outcome": TEXT_FIELD},
                     ("token_id",))


def _tokens(current: Any) -> Strategy:
    good = list(current or [])
    return st.one_of(st.none(), NOT_STR.filter(lambda v: not isinstance(v, list)), TEXT,
                     st.tuples(st.integers(0, len(good)), st.one_of(TOKEN_ENTRY, NOT_STR.filter(
                         lambda v: not isinstance(v, dict)))).map(lambda t: [*good[:t[0]], t[1], *good[t[0]:]]))


REST_BOOK_BODY = st.one_of(
    broken(REST_BOOK, {**COMMON, "tick_size": TICK, "last_trade_price": OPT_PRICE, "min_order_size": OPT_NUMBER},
           ("asset_id",), {"bids": _levels, "asks": _levels}),
    st.just({**REST_BOOK, "asset_id": CLOB_ASSETS[1]}),  # another asset's book
)
REST_MARKET_BODY = broken(
    REST_MARKET, {"minimum_tick_size": TICK, "minimum_order_size": OPT_NUMBER, "condition_id": CONDITION,
                  "market_slug": TEXT_FIELD}, ("tokens",), {"tokens": _tokens})


@st.composite
def rest_bodies(draw: st.DrawFn, body: Strategy) -> Case:
    """A ``/book`` or ``/markets`` body that must be refused: broken inside, not an object, not JSON."""
    how = draw(st.sampled_from(["body", "body", "not_object", "truncated", "not_utf8"]))
    if how == "body":
        return Case(dumps(draw(body)), 1, how)
    if how == "not_object":
        return Case(dumps(draw(st.one_of(st.none(), st.booleans(), JSON_INT, TEXT, st.lists(JSON_INT)))), 1, how)
    text = dumps(draw(body))
    if how == "truncated":
        return Case(text[:draw(st.integers(1, len(text) - 1))], 1, how)
    at = draw(st.integers(0, len(text) - 1))
    return Case(text[:at] + b"\xff" + text[at + 1:], 1, how)
