"""Orders alike are validated and priced once per batch: the outcome is the same as preparing each alone."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from common.marketstate import BookSnapshot
from services.executor.adapters.insiders_api import request_body
from services.executor.domain.order_intake import IntakeRules, Prepared, ShapeCache, prepare
from tests.executor.test_paper_and_intake import BOOK, NOW, RULES, order
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

VARIANTS: list[dict[str, Any]] = [
    {},
    {"side": cpb.SIDE_SELL, "amount_usd": "", "size": "20"},
    {"amount_usd": "7.5"},
    {"mode": cpb.EXECUTION_MODE_PAPER},
    {"reference_price": "0.40"},
    {"limit_price": "0.555"},
    {"amount_usd": "60"},  # too little depth
    {"amount_usd": "60", "origin": epb.ORDER_ORIGIN_TRIGGER},
    {"amount_usd": ""},
    {"amount_usd": "abc"},
    {"side": cpb.SIDE_UNSPECIFIED},
    {"mode": cpb.EXECUTION_MODE_UNSPECIFIED},
    {"tick_size": "0.7"},
    {"tick_size": ""},
    {"order_type": epb.ORDER_TYPE_GTC, "amount_usd": "", "size": "10"},
    {"order_type": epb.ORDER_TYPE_GTC, "amount_usd": "10"},
    {"asset_id": ""},
    {"asset_id": "other"},  # no book for it
    {"client_order_id": ""},
]
STALE = NOW - 61 * 10**9


def follower(i: int, variant: dict[str, Any], stale: bool) -> epb.Order:
    return order(**{**variant, **({"client_order_id": f"co_{i}"} if "client_order_id" not in variant else {}),
                    "follower_user_id": f"u_{i}", "follower_wallet_id": f"w_{i}",
                    "follower_proxy": "0x" + f"{i:040x}", "neg_risk": i % 2 == 1,
                    "routed_time_ns": STALE if stale else NOW - 1000})


def books(o: epb.Order) -> BookSnapshot | None:
    return BOOK if o.asset_id == "tok" else None


def body(p: Prepared) -> bytes:
    return request_body(p.ticket.request) if p.ticket.request is not None else b""


def same(a: Prepared, b: Prepared) -> bool:
    return (a.life, a.ticket.request, a.ticket.venue, body(a)) == (b.life, b.ticket.request, b.ticket.venue, body(b))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VARIANTS) - 1), st.booleans()), min_size=1, max_size=40),
       st.booleans())
def test_a_batch_with_shapes_prepares_exactly_like_one_by_one(picks: list[tuple[int, bool]], live: bool) -> None:
    rules = RULES if live else IntakeRules(live_configured=False)
    shapes: ShapeCache = {}
    quotes: dict[Any, Any] = {}
    for i, (variant, stale) in enumerate(picks):
        o = follower(i, VARIANTS[variant], stale)
        assert same(prepare(o, books(o), rules, NOW, quotes, shapes), prepare(o, books(o), rules, NOW))


def test_followers_alike_share_one_shape() -> None:
    shapes: ShapeCache = {}
    prepared = [prepare(follower(i, {}, False), BOOK, RULES, NOW, {}, shapes) for i in range(50)]
    assert len(shapes) == 1
    assert {p.ticket.request.wallet_id for p in prepared if p.ticket.request} == {f"w_{i}" for i in range(50)}
    stale = prepare(follower(99, {}, True), BOOK, RULES, NOW, {}, shapes)  # the age is checked per order
    assert stale.life.reason == "STALE_ORDER" and len(shapes) == 1
