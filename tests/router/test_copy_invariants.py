"""Invariants of copy decisions, over generated inputs: a copied BUY never passes a cap and always meets the market
minimum; the SELLs of a run of leader exits, carried from trade to trade as a batch carries them, never sell more
than the follower holds; and a SELL the router sizes equals the one the executor sizes from the same fraction."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from common.parts import others_own
from common.reservations import NOTHING_RESERVED, from_micro
from services.executor.domain.sell_sizing import copy_sellable, fraction_size
from services.router.domain.carry import InFlight
from services.router.domain.decide import decide_buy, route
from services.router.domain.market_rules import buy_minimum_usd
from services.router.domain.model import (
    FilterRules,
    OrderIntent,
    Reason,
    RiskRules,
    Side,
    SizingMode,
    SizingRules,
)
from services.router.domain.sells import leader_fraction, size_sell
from tests.router.factories import CONDITION, follower, market, policy, state, trade

D = Decimal
CENT = D("0.01")


def dec(lo: str, hi: str, places: int = 2) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=D(lo), max_value=D(hi), places=places, allow_nan=False, allow_infinity=False)


def opt(s: st.SearchStrategy[Decimal]) -> st.SearchStrategy[Decimal | None]:
    return st.none() | s


@settings(max_examples=400, deadline=None)
@given(price=dec("0.01", "0.99"), lsize=dec("0.01", "10000"), mode=st.sampled_from(list(SizingMode)),
       fixed=opt(dec("0.01", "1000")), ratio=opt(dec("0.001", "2", 3)), pct=opt(dec("0.01", "100")),
       balance=opt(dec("0", "100000")), min_usd=opt(dec("0.01", "100")), max_usd=opt(dec("0.01", "1000")),
       multiplier=dec("0.1", "3", 1), ceiling=opt(dec("1", "1000")), market_cap=opt(dec("1", "1000")),
       total_cap=opt(dec("1", "5000")), market_held=dec("0", "1000"), other_held=dec("0", "5000"),
       market_resv=dec("0", "500"), other_resv=dec("0", "500"), min_size=st.sampled_from([D(0), D(1), D(5), D(15)]),
       bps=st.none() | st.integers(0, 1000))
def test_a_copied_buy_never_passes_a_cap_and_meets_the_market_minimum(
        price: Decimal, lsize: Decimal, mode: SizingMode, fixed: Decimal | None, ratio: Decimal | None,
        pct: Decimal | None, balance: Decimal | None, min_usd: Decimal | None, max_usd: Decimal | None,
        multiplier: Decimal, ceiling: Decimal | None, market_cap: Decimal | None, total_cap: Decimal | None,
        market_held: Decimal, other_held: Decimal, market_resv: Decimal, other_resv: Decimal, min_size: Decimal,
        bps: int | None) -> None:
    f = follower(sizing=SizingRules(mode, fixed, ratio, pct, min_usd, max_usd), risk=RiskRules(market_cap, total_cap),
                 filters=FilterRules(max_slippage_bps=bps), multiplier=multiplier)
    s = state(market_exposure_usd=market_held, total_exposure_usd=market_held + other_held,
              reserved_market_usd=market_resv, reserved_total_usd=market_resv + other_resv, balance_usd=balance)
    d = decide_buy(trade(price=price, size=lsize), f, market(min_order_size=min_size), s, policy(max_order_usd=ceiling))
    if not isinstance(d, OrderIntent):
        return
    amount = d.amount_usd
    assert amount is not None and amount > 0 and amount == amount.quantize(CENT)
    for cap in (max_usd, ceiling):
        assert cap is None or amount <= cap
    assert market_cap is None or market_held + market_resv + amount <= market_cap
    assert total_cap is None or market_held + other_held + market_resv + other_resv + amount <= total_cap
    assert amount >= buy_minimum_usd(price, min_size, D(1), d.max_slippage_bps)


@settings(max_examples=300, deadline=None)
@given(held=dec("0", "500", 4), bought=dec("1", "1000"), sells=st.lists(dec("0.01", "600"), min_size=1, max_size=6),
       min_size=st.sampled_from([D(0), D(1), D(5)]))
def test_a_run_of_leader_exits_never_sells_more_than_held(held: Decimal, bought: Decimal, sells: list[Decimal],
                                                          min_size: Decimal) -> None:
    """Leader SELLs decided one after the other with what the earlier ones reserved carried (as a batch does, and
    as Redis holds it between batches), no fill in between: the follower's SELLs add up to at most what it holds,
    and the leader's close sells all of what the earlier ones left but what it cannot sell."""
    carry, f, rules = InFlight(), follower(), market(min_order_size=min_size)
    total = D(0)
    for i, sold in enumerate(sells):
        t = trade(id=f"lt_{i}", side=Side.SELL, price=D("0.5"), size=sold)
        res = carry.reserved(f.follower_wallet_id, CONDITION, t.asset_id, NOTHING_RESERVED)
        s = state(held_size=held, reserved_sell_size=from_micro(res.asset_shares_micro))
        before = carry.leader_before(t.wallet, t.asset_id, bought)
        [d] = route(t, [f], rules, {f.follower_wallet_id: s}, before, policy())
        if isinstance(d, OrderIntent):
            assert d.size is not None and d.size == d.size.quantize(CENT) and d.size >= min_size
            total += d.size
        else:
            assert d.reason in (Reason.NOTHING_HELD, Reason.SELL_BELOW_MARKET_MINIMUM)
        carry.add(t, CONDITION, [d], bought)
    assert total <= held
    if sum(sells) >= bought:  # the leader closed: what is left is less than a share step or the market minimum
        assert held - total < max(min_size, CENT)


@settings(max_examples=400, deadline=None)
@given(held=dec("0", "1000", 4), selling=dec("0", "1000", 4), sold=dec("0.01", "1000"), before=dec("0", "2000"),
       min_size=st.sampled_from([D(0), D(1), D(5), D(15)]), split=st.booleans(), share=dec("0", "1"),
       others_selling=dec("0", "500"))
def test_the_router_sizes_a_sell_as_the_executor_sizes_its_fraction(
        held: Decimal, selling: Decimal, sold: Decimal, before: Decimal, min_size: Decimal, split: bool,
        share: Decimal, others_selling: Decimal) -> None:
    """The same SELL, sized by the router now or sent as the leader's fraction and sized by the executor later on
    the same position, sells the same shares (or is skipped for the same reason; dust below the share step the
    router names SELL_BELOW_MARKET_MINIMUM, the executor NOTHING_HELD)."""
    selling = min(selling, held)
    parts = by_sub = None
    if split:
        mine = (held * share).quantize(D("0.0001"))
        parts, by_sub = {"sub_1": mine, "sub_2": held - mine}, {"sub_2": min(others_selling, selling)}
    routed = size_sell(state(held_size=held, reserved_sell_size=selling, held_parts=parts, selling_by=by_sub),
                       sold, before, min_size, "sub_1")
    sellable = copy_sellable(parts, "sub_1", held, selling, others_own(parts or {}, by_sub, "sub_1"))
    sized = sellable if isinstance(sellable, tuple) else fraction_size(sellable, leader_fraction(before, sold),
                                                                       min_size)
    if isinstance(routed, Decimal) or isinstance(sized, Decimal):
        assert routed == sized
        return
    assert isinstance(routed, tuple)
    reasons = (routed[0].value, sized[0])
    assert reasons[0] == reasons[1] or reasons == ("SELL_BELOW_MARKET_MINIMUM", "NOTHING_HELD")
