"""The market's taker fee travels from the CLOB ``/markets`` answer into the router's market info (Redis hash and
back); a missing or malformed fee field is "no fee known" and never drops the answer or the cached entry."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from common.clob_rest import market_infos, parse_market
from common.marketstate import MarketInfo
from common.takerfee import TakerFee, parse_taker_fee
from services.router.adapters.markets import parse_market_info
from tests.router.fakes import load

D = Decimal
MARKET = load("clob_market.json")
YES = MARKET["tokens"][0]["token_id"]


@pytest.mark.parametrize(
    ("fields", "expected", "problem"),
    [
        # CLOB /markets: the taker base fee (bps) is the most the venue charges: its rate on the p(1 - p) curve
        ({"taker_base_fee": 1000}, TakerFee(D("0.1"), D(1)), False),
        ({"taker_base_fee": "1000"}, TakerFee(D("0.1"), D(1)), False),
        ({"taker_base_fee": 0}, TakerFee(D(0), D(1)), False),
        # a schedule in the answer (Gamma's spelling, and the market channel's with decimal strings) is the fee
        ({"taker_base_fee": 1000, "feeSchedule": {"exponent": 1, "rate": 0.05, "takerOnly": True}},
         TakerFee(D("0.05"), D(1)), False),
        ({"taker_base_fee": 1000, "fee_schedule": {"exponent": "2", "rate": "0.25", "taker_only": True}},
         TakerFee(D("0.25"), D(2)), False),
        ({"taker_base_fee": 1000, "feesEnabled": False}, TakerFee(D(0), D(1)), False),
        ({"taker_base_fee": 1000, "fees_enabled": False}, TakerFee(D(0), D(1)), False),
        # absent: no fee known
        ({}, None, False),
        ({"taker_base_fee": None}, None, False),
        # malformed: no fee known, and said so
        ({"taker_base_fee": "ten"}, None, True),
        ({"taker_base_fee": True}, None, True),
        ({"taker_base_fee": -5}, None, True),
        ({"taker_base_fee": 10_000}, None, True),
        ({"taker_base_fee": 12.5}, None, True),
        ({"taker_base_fee": 1000, "fee_schedule": {"rate": "0.05"}}, TakerFee(D("0.1"), D(1)), True),
        ({"taker_base_fee": 1000, "fee_schedule": {"rate": "x", "exponent": 1}}, TakerFee(D("0.1"), D(1)), True),
        ({"fee_schedule": {"rate": "1", "exponent": 1}}, None, True),
        ({"fee_schedule": {"rate": "0.05", "exponent": -1}}, None, True),
        ({"fee_schedule": {"rate": "0.05", "exponent": "NaN"}}, None, True),
        ({"fee_schedule": "0.05"}, None, True),
        ({"taker_base_fee": 1000, "fees_enabled": "no"}, TakerFee(D("0.1"), D(1)), True),
    ],
)
def test_parse_taker_fee(fields: dict[str, Any], expected: TakerFee | None, problem: bool) -> None:
    fee, why = parse_taker_fee(fields)
    assert fee == expected
    assert bool(why) is problem


def test_market_answer_carries_the_fee_to_every_token() -> None:
    infos = parse_market_info(YES, {**MARKET, "taker_base_fee": 1000}, None, 5)
    assert [i.taker_fee for i in infos] == [TakerFee(D("0.1"), D(1))] * 2
    assert parse_market_info(YES, MARKET, None, 5)[0].taker_fee == TakerFee(D(0), D(1))


def test_malformed_fee_keeps_the_rest_of_the_answer() -> None:
    market = parse_market({**MARKET, "taker_base_fee": "lots"})
    assert market.taker_fee is None and market.fee_problem
    [info, _] = market_infos(5, market=market, asset_id=YES)
    assert info.tick_size == D("0.01") and info.min_order_size == D(5) and info.taker_fee is None


def test_book_alone_knows_no_fee() -> None:
    [info] = parse_market_info(YES, None, load("clob_book.json"), 5)
    assert info.taker_fee is None


@pytest.mark.parametrize("fee", [TakerFee(D("0.1"), D(1)), TakerFee(D("0.0175"), D("1.5")), TakerFee(D(0), D(1))])
def test_hash_round_trip(fee: TakerFee) -> None:
    info = MarketInfo(YES, MARKET["condition_id"], D("0.01"), D(5), taker_fee=fee, extra={"outcome": "Yes"})
    back = MarketInfo.from_hash(info.to_hash())
    assert back.taker_fee == fee and back.extra == {"outcome": "Yes"}


def test_hash_without_fee_writes_no_fee_fields() -> None:
    """An answer that knows no fee (a book alone) leaves what an earlier ``/markets`` answer stored."""
    h = MarketInfo(YES, "", D("0.01"), D(5)).to_hash()
    assert "taker_fee_rate" not in h and "taker_fee_exponent" not in h
    assert MarketInfo.from_hash(h).taker_fee is None


@pytest.mark.parametrize(
    "stored",
    [{"taker_fee_rate": "abc", "taker_fee_exponent": "1"}, {"taker_fee_rate": "0.1"},
     {"taker_fee_rate": "0.1", "taker_fee_exponent": "-1"}, {"taker_fee_rate": "2", "taker_fee_exponent": "1"},
     {"taker_fee_rate": "", "taker_fee_exponent": ""}, {"taker_fee_rate": "Infinity", "taker_fee_exponent": "1"}],
)
def test_malformed_stored_fee_is_no_fee(stored: dict[str, str]) -> None:
    h = {**MarketInfo(YES, "", D("0.01"), D(5)).to_hash(), **stored}
    info = MarketInfo.from_hash(h)
    assert info.taker_fee is None and info.tick_size == D("0.01")
    assert "taker_fee_rate" not in info.extra
