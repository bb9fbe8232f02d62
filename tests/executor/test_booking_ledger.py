"""Booking a long run of fills (pure, property based): each subscription's realized PnL is what its parts brought
less what they cost, its exposure is its parts' cost, and the split survives being stored and read back as the
positions row keeps it (NULL for a position its opening subscription holds alone)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal as D

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.executor.domain import settlement
from services.executor.domain import subscription_shares as ss
from services.executor.domain.fill_math import Booking, settle
from services.executor.domain.position_math import Position, apply_fill
from services.executor.domain.subscription_shares import Part
from services.executor.domain.ticket import PAPER, Ticket
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

KEY = ("w", "a")
SUBS = ["sub_A", "sub_B", ""]


def _fill(i: int, sub: str, buying: bool, size: D, price: D, fee: D) -> tuple[Ticket, Booking]:
    o = epb.Order(client_order_id=f"co_{i}", origin=epb.ORDER_ORIGIN_COPY if sub else epb.ORDER_ORIGIN_MANUAL,
                  subscription_id=sub, follower_wallet_id="w", asset_id="a",
                  side=cpb.SIDE_BUY if buying else cpb.SIDE_SELL)
    return Ticket(o, PAPER, None, 0), Booking(f"f_{i}", size, price, size * price, fee, True, 0)


def _read_back(stored: Mapping[str, list[str]] | None, pos: Position, opener: str | None) -> dict[str, Part]:
    kept = ss.decode(orjson.loads(orjson.dumps(stored))) if stored else None  # through jsonb, as the row keeps it
    return ss.split_of(kept, pos.size, pos.cost_usd, opener)


STEPS = st.lists(st.tuples(st.sampled_from(SUBS), st.booleans(), st.integers(1, 100_000), st.integers(1, 99),
                           st.integers(0, 500), st.integers(0, 9)), min_size=1, max_size=40)


@settings(max_examples=300)
@given(STEPS)
def test_each_subscriptions_pnl_is_its_proceeds_less_its_cost_through_stored_splits(
        steps: list[tuple[str, bool, int, int, int, int]]) -> None:
    position, opener, stored = Position(), None, None
    bought: dict[str, D] = {}
    proceeds: dict[str, D] = {}
    pnl: dict[str, D] = {}
    exposure: dict[str, D] = {}
    for i, (sub, buying, hundredths, cents, fee_bps, odd) in enumerate(steps):
        size = D(hundredths) / 100
        alone = buying and odd == 0  # a BUY's fee booked alone, after its shares
        if not buying:  # a SELL of at most what is held, as sizing sends it
            size = min(size, position.size.quantize(D("0.01"), rounding="ROUND_DOWN"))
            if size <= 0:
                continue
        fee = (size * fee_bps / 10_000).quantize(D("0.000001")) if buying else D(0)
        if alone:
            size = D(0)
        t, b = _fill(i, sub, buying, size, D(cents) / 100, fee)
        if alone:
            b = Booking(b.fill_id, D(0), b.price, D(0), fee, False, 0)
        positions = {KEY: position}
        splits = {KEY: _read_back(stored, position, opener)}
        [booked], stats, opened = settle(positions, [(t, b)], splits)  # type: ignore[arg-type]
        position = positions[KEY]
        if KEY in opened:
            opener = opened[KEY].subscription_id
        stored = ss.stored(splits[KEY], opener)
        for c in booked.charges:
            proceeds[c.subscription_id] = proceeds.get(c.subscription_id, D(0)) + c.proceeds_usd
        if buying:
            bought[ss.key_of(sub)] = bought.get(ss.key_of(sub), D(0)) + b.notional
        for s, x in stats.items():
            pnl[s] = pnl.get(s, D(0)) + x.pnl
            exposure[s] = exposure.get(s, D(0)) + x.exposure
        assert position.size >= 0 and position.cost_usd >= 0
        split = _read_back(stored, position, opener)
        assert sum((p.shares for p in split.values()), D(0)) == position.size
        assert sum((p.cost_usd for p in split.values()), D(0)) == position.cost_usd
        for s in SUBS[:2]:
            part = split.get(s, Part())
            assert exposure.get(s, D(0)) == part.cost_usd
            assert pnl.get(s, D(0)) == proceeds.get(s, D(0)) - bought.get(s, D(0)) + part.cost_usd


def _run(fills: list[tuple[bool, str, str, str]]) -> tuple[Position, list[D]]:
    pos, realized = Position(), []
    for buying, size, usd, fee in fills:
        e = apply_fill(pos, buying=buying, size=D(size), price=D(usd) / D(size), fee_shares=D(fee), notional=D(usd))
        pos = e.position
        realized.append(e.realized_pnl_usd)
    return pos, realized


@pytest.mark.parametrize(("fills", "after", "realized"), [
    # $10 at 0.50, a 2 % fee in shares: 19.6 shares that cost what was paid
    ([(True, "20", "10", "0.4")], Position(D("19.6"), D("0.51020408"), D(10)), [D(0)]),
    # ... all sold at 0.60: exactly received less paid, nothing left
    ([(True, "20", "10", "0.4"), (False, "19.6", "11.76", "0")], Position(realized_pnl_usd=D("1.76")),
     [D(0), D("1.76")]),
    # ... half sold at the (rounded) average cost, then the rest: the life still realizes received less paid
    ([(True, "20", "10", "0.4"), (False, "9.8", "5.88", "0"), (False, "9.8", "5.88", "0")],
     Position(realized_pnl_usd=D("1.76")), [D(0), D("0.880000016"), D("0.879999984")]),
    # a SELL reported beyond the holding realizes the held part's proceeds only, never a negative size
    ([(True, "10", "5", "0"), (False, "12", "7.2", "0")], Position(realized_pnl_usd=D(1)), [D(0), D(1)]),
    # a SELL booked after the position closed books nothing
    ([(True, "10", "5", "0"), (False, "10", "6", "0"), (False, "3", "1.5", "0")],
     Position(realized_pnl_usd=D(1)), [D(0), D(1), D(0)]),
    # closed to 0 and bought again: the new life's average is fresh, the old PnL stays on the row
    ([(True, "10", "5", "0"), (False, "10", "6", "0"), (True, "4", "1", "0")],
     Position(D(4), D("0.25"), D(1), D(1)), [D(0), D(1), D(0)]),
])
def test_booking_with_concrete_numbers(fills: list[tuple[bool, str, str, str]], after: Position,
                                       realized: list[D]) -> None:
    assert _run(fills) == (after, realized)


@pytest.mark.parametrize(("winner", "payout", "pnl"), [(True, D("9.8"), D("4.799999984")),
                                                       (False, D(0), D("-5.000000016"))])
def test_a_resolution_after_a_partial_sell_settles_what_is_left(winner: bool, payout: D, pnl: D) -> None:
    pos, _ = _run([(True, "20", "10", "0.4"), (False, "9.8", "5.88", "0")])
    [s], _ = settlement.settle(settlement.Resolution("c", ("yes", "no"), "yes" if winner else "no"),
                               [settlement.HeldPosition("w", "0x", "yes", "INSIDERS", "sub_A", pos.size,
                                                        pos.cost_usd)])
    assert (s.state, s.payout_usd, s.realized_pnl_usd) == (settlement.WON if winner else settlement.LOST, payout, pnl)
    assert [(c.subscription_id, c.realized_pnl_usd) for c in s.parts] == [("sub_A", pnl)]
    assert D("0.880000016") + pnl == D("5.88") + payout - D(10)  # the life: received and paid out, less paid
