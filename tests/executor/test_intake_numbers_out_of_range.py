"""An order whose numbers no price, tick or amount can have is refused as data (an UPPER_SNAKE reason), never
raised out of the intake: a raise fails every order of its batch (the other followers' copies of the same trade)
and answers a manual order INTERNAL instead of REJECTED."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.marketstate import BookSnapshot
from services.executor.domain.order_intake import IntakeRules, ShapeCache, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.pricing import valid_tick
from tests.executor.test_paper_and_intake import BOOK, NOW, order
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
RULES = IntakeRules(live_configured=True, max_order_usd=D("1000"))
SELL = {"side": cpb.SIDE_SELL, "amount_usd": ""}


CASES: list[tuple[dict[str, Any], str]] = [
    ({"amount_usd": "1e27"}, "INVALID_ORDER"),  # no cent of it fits the 28 digits of a Decimal
    ({"amount_usd": "1e29"}, "INVALID_ORDER"),
    ({**SELL, "size": "1e27"}, "INVALID_ORDER"),
    ({"order_type": epb.ORDER_TYPE_GTC, "amount_usd": "", "size": "1e27", "limit_price": "0.5"}, "INVALID_ORDER"),
    ({"limit_price": "1e30"}, "INVALID_ORDER"),
    ({"tick_size": "1e-30"}, "INVALID_TICK_SIZE"),  # finer than any market's grid (0.0001)
    ({"tick_size": "0.00001"}, "INVALID_TICK_SIZE"),
]


@pytest.mark.parametrize(("fields", "book", "reason"), [
    *[(f, BOOK, r) for f, r in CASES],
    *[(f, None, r) for f, r in CASES],
    ({"reference_price": "1e30"}, None, "INVALID_ORDER"),  # no book: the limit comes from the reference
])
def test_an_order_with_numbers_out_of_range_is_refused_not_raised(fields: dict[str, Any], book: BookSnapshot | None,
                                                                  reason: str) -> None:
    p = prepare(order(**fields), book, RULES, NOW)
    assert (p.life.state, p.life.reason) == (State.REJECTED, reason)
    assert p.ticket.request is None
    shapes: ShapeCache = {}  # a batch's followers alike: the refusal is kept for the next one, not raised
    for i in range(2):
        o = order(**fields, client_order_id=f"co_{i}", follower_wallet_id=f"w_{i}")
        q = prepare(o, book, RULES, NOW, {}, shapes)
        assert (q.life.state, q.life.reason) == (State.REJECTED, reason)


@pytest.mark.parametrize(("tick", "valid"), [
    (D("0.1"), True), (D("0.01"), True), (D("0.001"), True), (D("0.0001"), True),
    (D("0.00001"), False), (D("1e-30"), False), (D("0"), False), (D("0.5"), False),
])
def test_a_tick_finer_than_any_market_is_no_tick(tick: Decimal, valid: bool) -> None:
    assert valid_tick(tick) is valid


_NUMBER = st.one_of(st.sampled_from(["", "0", "-1", "1e30", "1e-30", "9" * 29, "0.0000001", "1e27"]),
                    st.decimals(allow_nan=False, allow_infinity=False).map(str))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([cpb.SIDE_BUY, cpb.SIDE_SELL]),
       st.sampled_from([epb.ORDER_TYPE_FAK, epb.ORDER_TYPE_FOK, epb.ORDER_TYPE_GTC]),
       _NUMBER, _NUMBER, _NUMBER, _NUMBER, _NUMBER, _NUMBER, st.booleans())
def test_whatever_numbers_an_order_carries_the_intake_answers_with_data(
        side: int, otype: int, amount: str, size: str, limit: str, reference: str, tick: str, minimum: str,
        with_book: bool) -> None:
    o = order(side=side, order_type=otype, amount_usd=amount, size=size, limit_price=limit,
              reference_price=reference, tick_size=tick, min_order_size=minimum)
    p = prepare(o, BOOK if with_book else None, RULES, NOW)
    if p.refused:
        assert p.life.reason and p.life.reason == p.life.reason.upper() and " " not in p.life.reason
    else:
        r = p.ticket.request
        assert r is not None and D("0.0001") <= r.limit_price <= 1 - D("0.0001")
