"""The start-up mark replay's rules (pure): which ticks count, and which stops a stretch of the log lifts, to what."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.guard.config import Tuning
from services.guard.domain.mark_replay import PriceHighs, recovered_marks, tick_prices
from services.guard.domain.outcomes import Prices
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
A = "asset-1"
S = 1_000_000_000


def _stop(tid: str = "t", *, mark: str = "0.55", activation: str = "0", source: Source = Source.BEST_BID,
          asset: str = A) -> TriggerSpec:
    return TriggerSpec(tid, asset, Kind.TRAILING_STOP, source, trail_pct=D("10"), activation_price=D(activation),
                       high_water_mark=D(mark))


def _highs(*prices: tuple[int, str], asset: str = A, source: str = "bid") -> PriceHighs:
    """Best bids (or mids, last trades) received at the given seconds."""
    highs = PriceHighs()
    for at_s, price in prices:
        p = D(price)
        highs.add(asset, at_s * S, Prices(best_bid=p) if source == "bid" else
                  Prices(mid=p) if source == "mid" else Prices(last_trade=p))
    return highs


@pytest.mark.parametrize(("stop", "changed_s", "prices", "expected"), [
    (_stop(), 0, [(1, "0.60"), (2, "0.58")], D("0.60")),  # the highest since the stop changed
    (_stop(), 0, [(1, "0.54"), (2, "0.55")], None),  # not above the stored mark
    (_stop(), 5, [(1, "0.70"), (6, "0.60")], D("0.60")),  # a price from before the change lifts nothing
    (_stop(), 5, [(1, "0.70")], None),
    (_stop(), 6, [(6, "0.70")], None),  # within the margin after the change: left out
    (_stop(mark="0", activation="0.65"), 0, [(1, "0.60")], None),  # never reached the activation price
    (_stop(mark="0", activation="0.65"), 0, [(1, "0.60"), (2, "0.66"), (3, "0.61")], D("0.66")),
    (_stop(mark="0.50", activation="0.65"), 0, [(1, "0.60")], None),  # a mark below activation: still inactive
    (_stop(mark="0.50", activation="0.65"), 0, [(1, "0.66")], D("0.66")),
    (_stop(source=Source.MID), 0, [(1, "0.60")], None),  # another source's price
    (_stop(asset="asset-2"), 0, [(1, "0.60")], None),  # another asset's price
    (_stop(), None, [(1, "0.60")], None),  # change time not known (not ARMED any more)
])
def test_which_stops_the_logs_prices_lift(stop: TriggerSpec, changed_s: int | None, prices: list[tuple[int, str]],
                                          expected: Decimal | None) -> None:
    changed = {} if changed_s is None else {stop.id: changed_s * S or 1}
    out = recovered_marks([stop], changed, _highs(*prices), margin_ns=S // 2)
    assert out.get(stop.id) == expected


def test_only_trailing_stops_are_lifted_each_by_its_own_source() -> None:
    take_profit = TriggerSpec("tp", A, Kind.TAKE_PROFIT, trigger_price=D("0.9"))
    highs = PriceHighs()
    highs.add(A, S, Prices(best_bid=D("0.60"), mid=D("0.62"), last_trade=D("0.65")))
    stops = [take_profit, _stop("bid"), _stop("mid", source=Source.MID), _stop("last", source=Source.LAST_TRADE)]
    out = recovered_marks(stops, {s.id: 1 for s in stops}, highs, margin_ns=0)
    assert out == {"bid": D("0.60"), "mid": D("0.62"), "last": D("0.65")}


def _tick(**fields: object) -> mpb.PriceTick:
    base: dict[str, object] = dict(asset_id=A, kind=mpb.TICK_KIND_PRICE_CHANGE, best_bid="0.6", mid="0.61",
                                   received_time_ns=5 * S)
    base.update(fields)
    return mpb.PriceTick(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, (5 * S, Prices(best_bid=D("0.6"), mid=D("0.61")))),
    ({"observed_time_ns": 4 * S}, (4 * S, Prices(best_bid=D("0.6"), mid=D("0.61")))),  # a left-out price sent again
    ({"kind": mpb.TICK_KIND_BOOK}, (5 * S, Prices(best_bid=D("0.6"), mid=D("0.61")))),
    ({"kind": mpb.TICK_KIND_STALE}, None),
    ({"kind": mpb.TICK_KIND_MARKET_RESOLVED}, None),
    ({"stale": True}, None),  # the book was stale or out of sync
    ({"received_time_ns": 0}, None),  # no known time
    ({"received_time_ns": 0, "observed_time_ns": 4 * S}, None),
    ({"best_bid": "1.5"}, None),  # a malformed price: the engine ignores the whole tick
    ({"best_bid": "x"}, None),
    ({"best_bid": "", "mid": ""}, None),
    ({"best_bid": "0", "mid": ""}, None),  # 0 is no price
    ({"asset_id": ""}, None),
])
def test_which_ticks_count(fields: dict[str, object], expected: tuple[int, Prices] | None) -> None:
    assert tick_prices(_tick(**fields)) == expected


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 99)), max_size=40), st.integers(-1, 52))
def test_the_highest_price_since_a_time_is_the_maximum_over_the_prices_at_or_after_it(
        prices: list[tuple[int, int]], since: int) -> None:
    highs = PriceHighs()
    for at, cents in prices:
        highs.add(A, at, Prices(best_bid=D(cents) / 100))
    later = [D(cents) / 100 for at, cents in prices if at >= since]
    assert highs.highest_since(A, Source.BEST_BID, since) == (max(later) if later else None)
    highs.add(A, 51, Prices(best_bid=D("0.995")))  # added after a query: taken into account
    assert highs.highest_since(A, Source.BEST_BID, since) == (D("0.995") if since <= 51 else None)


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 9)), max_size=60))
def test_every_answer_stays_right_as_prices_come_in_any_order_and_only_possible_answers_are_kept(
        prices: list[tuple[int, int]]) -> None:
    highs = PriceHighs()
    seen: list[tuple[int, Decimal]] = []
    for at, tenths in prices:
        highs.add(A, at, Prices(best_bid=D(tenths) / 10))
        seen.append((at, D(tenths) / 10))
        for since in range(-1, 22):
            later = [p for t, p in seen if t >= since]
            assert highs.highest_since(A, Source.BEST_BID, since) == (max(later) if later else None)
    assert highs.kept() <= len({p for _t, p in seen})  # prices falling as times rise: one per distinct price at most


def test_a_price_from_while_the_change_was_committed_and_announced_lifts_nothing_a_live_guard_did_not() -> None:
    """The row's update_time is its writer's clock before the transaction; a live guard arms the stop once the change
    is committed and announced (here 12 ms later). A 0.60 in between lifted nothing live (mark 0.58 from the price
    after the arm, level 0.522): recovered at the next start, it must not sell at 0.535 either."""
    ms = 1_000_000
    changed = 1_700_000_000_000 * ms
    stop = TriggerSpec("trg", A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=D("10"))
    ticks = [(changed + 5 * ms, D("0.60")), (changed + 20 * ms, D("0.58"))]
    live = Engine()
    assert not live.on_tick(A, Prices(best_bid=ticks[0][1]), stale=False, received_ns=ticks[0][0]).fired
    live.upsert(stop, armed_ns=changed + 12 * ms)
    live.on_tick(A, Prices(best_bid=ticks[1][1]), stale=False, received_ns=ticks[1][0])

    highs = PriceHighs()
    for at, price in ticks:
        highs.add(A, at, Prices(best_bid=price))
    margin_ns = int(Tuning().mark_replay_arm_margin_s * 1e9)  # guard's setting
    recovered = recovered_marks([stop], {"trg": changed}, highs, margin_ns).get("trg", D(0))
    restarted = Engine()
    restarted.upsert(stop.with_mark(recovered))
    assert recovered <= D("0.58")
    assert not live.on_tick(A, Prices(best_bid=D("0.535")), stale=False, received_ns=changed + 60 * ms).fired
    assert not restarted.on_tick(A, Prices(best_bid=D("0.535")), stale=False, received_ns=changed + 60 * ms).fired
