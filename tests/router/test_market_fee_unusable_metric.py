"""A CLOB market answer whose taker fee fields cannot be read is counted (``router.market_fee_unusable``).

Before: the router logged a warning and routed with no fee known, so a copy could end below the market's minimum once
the venue took its fee, and no metric told operators. Now each such answer is counted, the counter exported from the
start with 0. Real HTTP stand-in for the CLOB REST API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.router.adapters.markets import ClobMarketInfo
from services.router.metrics import MarketFeeMetrics
from tests.helpers import counter_sums
from tests.router.fakes import FakeHttp, load

MARKET = load("clob_market.json")
BOOK = load("clob_book.json")
YES = MARKET["tokens"][0]["token_id"]
COND = MARKET["condition_id"]
NAME = "router.market_fee_unusable"


def _exported(reader: InMemoryMetricReader) -> dict[tuple[tuple[str, str], ...], int]:
    return counter_sums(reader)[NAME][4]


@pytest.fixture
async def clob() -> AsyncIterator[FakeHttp]:
    fake = FakeHttp()
    await fake.start()
    yield fake
    await fake.stop()


def test_the_counter_is_exported_from_the_start_with_0() -> None:
    reader = InMemoryMetricReader()
    MarketFeeMetrics(MeterProvider(metric_readers=[reader]).get_meter("tradingtools.router"))
    assert _exported(reader) == {(): 0}


@pytest.mark.integration
@pytest.mark.parametrize(("fee", "counted"), [
    ({"taker_base_fee": "ten"}, 1),  # unreadable: no fee known
    ({"taker_base_fee": 12.5}, 1),  # not a whole number of bps
    ({"fee_schedule": {"rate": "2", "exponent": "1"}, "taker_base_fee": 1000}, 1),  # schedule out of range
    ({"fees_enabled": "yes", "taker_base_fee": 1000}, 1),
    ({"taker_base_fee": 1000}, 0),  # readable
    ({"fees_enabled": False}, 0),
])
async def test_a_market_answer_whose_fee_cannot_be_read_is_counted(clob: FakeHttp, fee: dict[str, object],
                                                                   counted: int) -> None:
    clob.add_market({**MARKET, **fee}, BOOK)
    reader = InMemoryMetricReader()
    metrics = MarketFeeMetrics(MeterProvider(metric_readers=[reader]).get_meter("tradingtools.router"))
    async with aiohttp.ClientSession() as session:
        infos = await ClobMarketInfo(session, clob.url, timeout_s=2, fee_metrics=metrics).fetch(YES, COND, 1_000)
    assert infos  # the market is routed on all the same
    assert _exported(reader) == {(): counted} and metrics.unusable == counted
