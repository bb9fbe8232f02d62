"""A level of size 0 (or less) holds nothing: the limit is priced from the best level that holds shares, and the
book arithmetic reads such levels, and an empty book, as no liquidity (pure, property based)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.marketstate import BookSnapshot
from services.executor.domain.book_math import Levels, notional_within, price_for_volume, volume_within, vwap
from services.executor.domain.order_intake import prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.pricing import check_depth, quote_depth
from tests.executor.test_paper_and_intake import NOW, RULES, order
from tradingtools.common.v1 import common_pb2 as cpb

D = Decimal
TICK = D("0.01")
ASKS = ((D("0.40"), D("0")), (D("0.50"), D("100")), (D("0.51"), D("100")))
BIDS = ((D("0.60"), D("0")), (D("0.49"), D("100")), (D("0.48"), D("100")))


@pytest.mark.parametrize(("buying", "levels", "limit"), [
    (True, ASKS, D("0.51")),  # 0.50 + 2 %, not 0.40 + 2 %: nothing is offered at 0.40
    (False, BIDS, D("0.49")),  # 0.49 − 2 % snapped up, not 0.60 − 2 %
    (True, ((D("0.40"), D("-1")), *ASKS[1:]), D("0.51")),
])
def test_the_limit_comes_from_the_best_level_that_holds_shares(buying: bool, levels: Levels, limit: Decimal) -> None:
    d = check_depth(buying=buying, quantity=D("20"), opposite=levels, tick=TICK, max_slippage_bps=200)
    assert (d.ok, d.reason, d.limit_price) == (True, "", limit)


@pytest.mark.parametrize("levels", [(), ((D("0.50"), D("0")),), ((D("0.50"), D("0")), (D("0.51"), D("0")))])
def test_a_side_without_shares_is_no_liquidity(levels: Levels) -> None:
    d = check_depth(buying=True, quantity=D("20"), opposite=levels, tick=TICK, max_slippage_bps=200)
    assert (d.ok, d.reason, d.limit_price) == (False, "NO_LIQUIDITY", None)
    assert vwap(levels, D("1")) is None and price_for_volume(levels, D("1")) is None


def test_a_copy_is_priced_past_an_empty_best_level() -> None:
    book = BookSnapshot("tok", "0xc", BIDS, ASKS, TICK, 1, 1)
    buy = prepare(order(), book, RULES, NOW)
    sell = prepare(order(side=cpb.SIDE_SELL, amount_usd="", size="20"), book, RULES, NOW)
    assert (buy.life.state, buy.life.limit_price) == (State.SUBMITTING, D("0.51"))
    assert (sell.life.state, sell.life.limit_price) == (State.SUBMITTING, D("0.49"))


prices = st.integers(1, 99).map(lambda n: D(n) / 100)
sizes = st.sampled_from([D("0"), D("0"), D("0.005"), D("1"), D("10"), D("250.5")])


@given(st.lists(st.tuples(prices, sizes), max_size=6), st.booleans(), st.integers(0, 3000),
       st.integers(1, 5000).map(lambda n: D(n) / 10))
def test_empty_levels_change_nothing(raw: list[tuple[Decimal, Decimal]], buying: bool, bps: int,
                                     quantity: Decimal) -> None:
    """A book with levels of size 0 quotes, judges, and averages as the same book without them."""
    levels = tuple(sorted({p: s for p, s in raw}.items(), reverse=not buying))
    held = tuple((p, s) for p, s in levels if s > 0)
    assert quote_depth(buying=buying, opposite=levels, tick=TICK, max_slippage_bps=bps) == \
        quote_depth(buying=buying, opposite=held, tick=TICK, max_slippage_bps=bps)
    assert vwap(levels, quantity) == vwap(held, quantity)
    assert price_for_volume(levels, quantity) == price_for_volume(held, quantity)
    for limit in (D("0.01"), D("0.5"), D("0.99")):
        assert volume_within(levels, limit, buying) == volume_within(held, limit, buying)
        assert notional_within(levels, limit, buying) == notional_within(held, limit, buying)
    average = vwap(held, quantity)
    if average is not None:  # the average of a walk lies between the best price and the worst one reached
        worst = price_for_volume(held, quantity)
        assert worst is not None and min(held[0][0], worst) <= average <= max(held[0][0], worst)
