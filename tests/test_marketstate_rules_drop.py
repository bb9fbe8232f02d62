"""Dropping an asset's cached rules (a venue refusal: the router reads them again) keeps what is no cached rule, and
every reader of ``tt:market:{asset}`` reads a hash without rules."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common.marketstate import (
    CLOSED_TICK,
    OUTCOME_INDEX,
    RESOLVED_WINNER,
    MarketInfo,
    drop_market_rules,
    market_key,
    read_market,
    write_market,
)
from services.guard.adapters.market_state import RedisMarkets

D = Decimal
ASSET = "123"
NO_RULES = {"asset_id": ASSET, "condition_id": "0xc", "neg_risk": "1", "closed": "0", "accepting_orders": "1",
            "market_slug": "will-it-rain", "event_slug": "", OUTCOME_INDEX: "1"}


def test_a_hash_without_rules_reads_as_rules_not_known() -> None:
    info = MarketInfo.from_hash(NO_RULES)
    assert (info.tick_size, info.min_order_size) == (D(0), D(0))  # the router reads them again
    assert (info.condition_id, info.neg_risk, info.outcome_index, info.closed) == ("0xc", True, 1, False)


@pytest.mark.parametrize("half", [{"tick_size": "0.01"}, {"min_order_size": "5"}, {"tick_size": "0.01",
                                                                                  "min_order_size": ""}])
def test_a_hash_with_one_rule_of_the_two_reads_as_rules_not_known(half: dict[str, str]) -> None:
    """A ``tick_size_change`` written after the rules were dropped brings the tick back alone: a minimum read as 0
    would let the router size a copy below the venue's."""
    info = MarketInfo.from_hash({**NO_RULES, **half})
    assert (info.tick_size, info.min_order_size) == (D(0), D(0))  # the router reads them again


def test_a_market_without_a_minimum_keeps_its_rules() -> None:
    """CLOB REST named no minimum (stored as 0): the rules are known, not read again on every trade."""
    info = MarketInfo.from_hash(MarketInfo(ASSET, "0xc", D("0.01"), D(0)).to_hash())
    assert (info.tick_size, info.min_order_size) == (D("0.01"), D(0))


@pytest.mark.parametrize("closing", [{"closed": "1"}, {RESOLVED_WINNER: "456"}])
def test_a_closed_market_without_rules_keeps_a_nominal_tick_and_stays_closed(closing: dict[str, str]) -> None:
    info = MarketInfo.from_hash({**NO_RULES, **closing})
    assert (info.tick_size, info.closed) == (CLOSED_TICK, True)  # usable as is: not read again from CLOB REST


@pytest.mark.integration
async def test_dropping_the_rules_keeps_the_resolution_the_outcome_index_and_the_market(
        r: aioredis.Redis) -> None:
    await write_market(r, MarketInfo(ASSET, "0xc", D("0.01"), D("5"), neg_risk=True, market_slug="will-it-rain",
                                     updated_ms=7, extra={OUTCOME_INDEX: "1", RESOLVED_WINNER: "456"}))
    await drop_market_rules(r, ASSET)
    assert await r.hgetall(market_key(ASSET)) == {
        "asset_id": ASSET, "condition_id": "0xc", "neg_risk": "1", "closed": "0", "accepting_orders": "1",
        "market_slug": "will-it-rain", "event_slug": "", "updated_ms": "7", OUTCOME_INDEX: "1", RESOLVED_WINNER: "456"}
    info = await read_market(r, ASSET)
    assert info is not None and (info.closed, info.accepting_orders, info.resolved_winner) == (True, False, "456")

    await drop_market_rules(r, "789")  # nothing cached: nothing written
    assert not await r.exists(market_key("789"))


@pytest.mark.integration
async def test_readers_read_a_hash_whose_rules_were_dropped(r: aioredis.Redis) -> None:
    await write_market(r, MarketInfo(ASSET, "0xc", D("0.01"), D("5"), neg_risk=True, extra={OUTCOME_INDEX: "1"}))
    await drop_market_rules(r, ASSET)

    info = await read_market(r, ASSET)  # ingest's resolutions, the paper venue
    assert info is not None and (info.tick_size, info.outcome_index, info.neg_risk) == (D(0), 1, True)
    guard = RedisMarkets(r)
    assert await guard.prefetch([ASSET]) == 1
    cached = await guard.market(ASSET)
    assert cached is not None and (cached.tick_size, cached.neg_risk) == (D(0), True)
