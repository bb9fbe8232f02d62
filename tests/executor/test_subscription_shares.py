"""Each subscription's part of a shared position (pure): BUYs, SELLs (own shares first, the rest in proportion),
settlement and reconciliation, with the parts always adding up to the position."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.executor.domain import subscription_shares as ss
from services.executor.domain.fill_math import Booking, settle
from services.executor.domain.position_math import Position, apply_fill
from services.executor.domain.subscription_shares import Part
from services.executor.domain.ticket import PAPER, Ticket
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

KEY = ("w", "a")


def _fill(i: int, sub: str, buying: bool, size: str, price: str, fee: str = "0") -> tuple[Ticket, Booking]:
    o = epb.Order(client_order_id=f"co_{i}", origin=epb.ORDER_ORIGIN_COPY if sub else epb.ORDER_ORIGIN_MANUAL,
                  subscription_id=sub, follower_wallet_id="w", asset_id="a",
                  side=cpb.SIDE_BUY if buying else cpb.SIDE_SELL)
    return Ticket(o, PAPER, None, 0), Booking(f"f_{i}", D(size), D(price), D(size) * D(price), D(fee), True, 0)


def _book(*fills: tuple[Ticket, Booking], position: Position | None = None,
          split: dict[str, Part] | None = None) -> tuple[Position, dict[str, Part], dict[str, tuple[D, D]]]:
    positions = {KEY: position} if position is not None else {}
    splits = {KEY: split} if split is not None else {}
    _, stats, _ = settle(positions, list(fills), splits)  # type: ignore[arg-type]
    return positions[KEY], dict(splits[KEY]), {s: (x.exposure, x.pnl) for s, x in stats.items()}


A_B = {"sub_A": Part(D(100), D(40)), "sub_B": Part(D(50), D(30))}  # 150 shares, $70
A_B_POSITION = Position(D(150), D("0.46666667"), D(70))


@pytest.mark.parametrize(("weights", "total", "capped", "expected"), [
    ({"a": D(100), "b": D(50)}, D(30), True, {"a": D(20), "b": D(10)}),
    ({"a": D(1), "b": D(1), "c": D(1)}, D(1), True, {"a": D("0.33333333"), "b": D("0.33333334"),
                                                      "c": D("0.33333333")}),
    ({"a": D(5), "b": D(0)}, D(5), True, {"a": D(5), "b": D(0)}),
    ({"a": D("0.000000015"), "b": D("0.000000015")}, D("0.00000003"), True,  # everything: each its whole weight
     {"a": D("0.000000015"), "b": D("0.000000015")}),
    ({"a": D(2), "b": D(1)}, D("0.00000001"), False, {"a": D("0.00000001"), "b": D(0)}),
    ({"a": D(1)}, D("12.345"), False, {"a": D("12.345")}),
])
def test_allocate_hands_out_exactly_the_total(weights: dict[str, D], total: D, capped: bool,
                                              expected: dict[str, D]) -> None:
    got = ss.allocate(total, weights, capped=capped)
    assert got == expected and sum(got.values()) == total


@pytest.mark.parametrize(("key", "sold", "expected"), [
    ("sub_A", D(40), {"sub_A": D(40)}),  # its own shares first
    ("sub_A", D(130), {"sub_A": D(100), "sub_B": D(30)}),  # then the others'
    ("sub_B", D(150), {"sub_A": D(100), "sub_B": D(50)}),  # the whole position
    ("", D(60), {"sub_A": D(40), "sub_B": D(20)}),  # a manual SELL: in proportion to the shares held
    ("sub_C", D(3), {"sub_A": D(2), "sub_B": D(1)}),  # a subscription that holds nothing of it
])
def test_a_sell_takes_its_own_subscriptions_shares_first(key: str, sold: D, expected: dict[str, D]) -> None:
    assert ss.take(A_B, key, sold) == expected


@pytest.mark.parametrize(("fills", "size", "cost", "split", "stats"), [
    # the reviewer's case: two subscriptions of one wallet buy the same token
    ([("sub_A", True, "100", "0.40"), ("sub_B", True, "50", "0.40")], D(150), D(60),
     {"sub_A": Part(D(100), D(40)), "sub_B": Part(D(50), D(20))}, {"sub_A": (D(40), D(0)), "sub_B": (D(20), D(0))}),
    # a BUY's fee taken in shares: fewer shares, the whole cost
    ([("sub_A", True, "100", "0.50", "2")], D(98), D(50), {"sub_A": Part(D(98), D(50))}, {"sub_A": (D(50), D(0))}),
    # sub_A sells its own 40: realized against its own average (0.40), sub_B untouched
    ([("sub_A", False, "40", "0.50")], D(110), D(54), {"sub_A": Part(D(60), D(24)), "sub_B": Part(D(50), D(30))},
     {"sub_A": (D(-16), D(4))}),
    # an exit of the whole position on sub_A's order: each subscription its part, at its own cost
    ([("sub_A", False, "150", "0.50")], D(0), D(0), {}, {"sub_A": (D(-40), D(10)), "sub_B": (D(-30), D(-5))}),
    # a manual SELL of 60: 40 of sub_A's shares, 20 of sub_B's
    ([("", False, "60", "0.50")], D(90), D(42), {"sub_A": Part(D(60), D(24)), "sub_B": Part(D(30), D(18))},
     {"sub_A": (D(-16), D(4)), "sub_B": (D(-12), D(-2))}),
    # a SELL of more than is held: what is held, the proceeds of the shares sold only
    ([("sub_B", False, "300", "0.50")], D(0), D(0), {}, {"sub_A": (D(-40), D(10)), "sub_B": (D(-30), D(-5))}),
])
def test_fills_book_each_subscriptions_part(fills: list[tuple[str, ...]], size: D, cost: D, split: dict[str, Part],
                                            stats: dict[str, tuple[D, D]]) -> None:
    shared = any(not f[1] for f in fills)
    pos, got_split, got_stats = _book(*(_fill(i, *f) for i, f in enumerate(fills)),  # type: ignore[arg-type]
                                      position=A_B_POSITION if shared else None, split=dict(A_B) if shared else None)
    assert (pos.size, pos.cost_usd, got_split, got_stats) == (size, cost, split, stats)


def test_a_position_held_by_one_subscription_is_booked_as_before() -> None:
    pos = Position(D(100), D("0.33333333"), D("33.333333"))
    for buying, size, price in [(False, "40", "0.7"), (True, "7", "0.13"), (False, "67", "0.2")]:
        fill = _fill(1, "sub_A", buying, size, price)
        expected = apply_fill(pos, buying=buying, size=D(size), price=D(price), notional=D(size) * D(price))
        after, split, stats = _book(fill, position=pos, split={"sub_A": Part(pos.size, pos.cost_usd)})
        assert after == expected.position and split == ({"sub_A": Part(after.size, after.cost_usd)} if after.size
                                                         else {})
        assert stats == {"sub_A": (expected.exposure_delta_usd, expected.realized_pnl_usd)}
        pos = after


def test_a_manual_sell_of_one_subscriptions_position_is_charged_to_it() -> None:
    _, split, stats = _book(_fill(1, "", False, "100", "0.6"), position=Position(D(100), D("0.4"), D(40)),
                            split={"sub_A": Part(D(100), D(40))})
    assert (split, stats) == ({}, {"sub_A": (D(-40), D(20))})


@pytest.mark.parametrize(("stored", "size", "cost", "opening", "expected"), [
    (None, D(10), D(4), "sub_A", {"sub_A": Part(D(10), D(4))}),  # booked before splits were kept
    (None, D(10), D(4), None, {"": Part(D(10), D(4))}),  # manual or external
    ({"sub_A": Part(D(6), D(2)), "sub_B": Part(D(4), D(2))}, D(10), D(4), "sub_A",
     {"sub_A": Part(D(6), D(2)), "sub_B": Part(D(4), D(2))}),
    # a split that no longer adds up (an older executor booked since): the opening subscription's, as before
    ({"sub_A": Part(D(6), D(2)), "sub_B": Part(D(4), D(2))}, D(12), D(5), "sub_A", {"sub_A": Part(D(12), D(5))}),
    (None, D(0), D(0), "sub_A", {}),
])
def test_the_stored_split_is_trusted_only_when_it_adds_up(stored: dict[str, Part] | None, size: D, cost: D,
                                                          opening: str | None, expected: dict[str, Part]) -> None:
    assert ss.split_of(stored, size, cost, opening) == expected
    assert ss.decode(ss.encode(expected)) == expected


@pytest.mark.parametrize(("per_share", "expected"), [
    (D(1), [("sub_A", D(100), D(100), D(-40), D(60)), ("sub_B", D(50), D(50), D(-20), D(30))]),
    (D(0), [("sub_A", D(100), D(0), D(-40), D(-40)), ("sub_B", D(50), D(0), D(-20), D(-20))]),
])
def test_a_resolution_pays_each_part_for_its_shares(per_share: D, expected: list[tuple[str, D, D, D, D]]) -> None:
    charges = ss.resolve({"sub_A": Part(D(100), D(40)), "sub_B": Part(D(50), D(20))}, per_share)
    assert [(c.subscription_id, c.shares, c.proceeds_usd, c.exposure_delta_usd, c.realized_pnl_usd)
            for c in charges] == expected


@pytest.mark.parametrize(("size", "cost", "split", "exposure"), [
    (D(120), D(56), {"sub_A": Part(D(80), D(32)), "sub_B": Part(D(40), D(24))}, {"sub_A": D(-8), "sub_B": D(-6)}),
    (D(0), D(0), {}, {"sub_A": D(-40), "sub_B": D(-30)}),  # sold outside the engine: every part ends
    (D(300), D(140), {"sub_A": Part(D(200), D(80)), "sub_B": Part(D(100), D(60))},
     {"sub_A": D(40), "sub_B": D(30)}),
])
def test_a_reconciliation_scales_every_part(size: D, cost: D, split: dict[str, Part],
                                            exposure: dict[str, D]) -> None:
    after, charges = ss.rescale(A_B, size, cost)
    assert after == split and {c.subscription_id: c.exposure_delta_usd for c in charges} == exposure


# (subscription, BUY, shares in thousandths, price in thousandths, fee shares in thousandths)
FILLS = st.lists(st.tuples(st.sampled_from(["sub_A", "sub_B", "sub_C", ""]), st.booleans(),
                           st.integers(1, 5_000_000), st.integers(1, 999), st.integers(0, 3_000)),
                 min_size=1, max_size=40)
MILLI = D("0.001")


@given(FILLS, st.sampled_from([D(0), D(1)]))
def test_the_parts_always_add_up_to_the_position(fills: list[tuple[str, bool, int, int, int]], payout: D) -> None:
    positions: dict[tuple[str, str], Position] = {}
    splits: dict[tuple[str, str], dict[str, Part]] = {}
    for i, (sub, buying, size, price, fee) in enumerate(fills):
        before, parts_before = positions.get(KEY, Position()), dict(splits.get(KEY, {}))
        t, b = _fill(i, sub, buying, str(size * MILLI), str(price * MILLI), str(fee * MILLI) if buying else "0")
        [booked], stats, _ = settle(positions, [(t, b)], splits)  # type: ignore[arg-type]
        pos, split = positions[KEY], splits[KEY]
        assert sum((p.shares for p in split.values()), D(0)) == pos.size
        assert sum((p.cost_usd for p in split.values()), D(0)) == pos.cost_usd
        assert all(p.shares >= 0 and p.cost_usd >= 0 for p in split.values())
        # each subscription's exposure moves with its own part's cost; the PnL realized adds up to the position's
        for s in {*parts_before, *split, *stats} - {""}:
            change = split.get(s, Part()).cost_usd - parts_before.get(s, Part()).cost_usd
            assert (stats[s].exposure if s in stats else D(0)) == change
        unowned = sum((c.realized_pnl_usd for c in booked.charges if not c.subscription_id), D(0))
        assert sum((x.pnl for x in stats.values()), D(0)) + unowned == pos.realized_pnl_usd - before.realized_pnl_usd
        assert pos.realized_pnl_usd - before.realized_pnl_usd == booked.effect.realized_pnl_usd
        if not buying:
            assert sum((c.shares for c in booked.charges), D(0)) == before.size - pos.size
            assert sum((c.proceeds_usd for c in booked.charges), D(0)) == b.notional * (before.size - pos.size) / b.size
    split, pos = splits[KEY], positions[KEY]
    charges = ss.resolve(split, payout)
    assert sum((c.proceeds_usd for c in charges), D(0)) == pos.size * payout
    assert sum((c.realized_pnl_usd for c in charges), D(0)) == pos.size * payout - pos.cost_usd
    assert sum((c.exposure_delta_usd for c in charges), D(0)) == -pos.cost_usd


@given(FILLS, st.integers(0, 20_000), st.integers(0, 10_000))
def test_a_rescaled_split_adds_up_to_the_corrected_position(fills: list[tuple[str, bool, int, int, int]],
                                                            size: int, cents: int) -> None:
    positions: dict[tuple[str, str], Position] = {}
    splits: dict[tuple[str, str], dict[str, Part]] = {}
    settle(positions, [_fill(i, sub, buying, str(n * MILLI), str(p * MILLI)) for i, (sub, buying, n, p, _) in
                       enumerate(fills)], splits)  # type: ignore[arg-type]
    split = splits[KEY]
    cost = D(size) * D(cents) / 10_000 if size else D(0)
    after, charges = ss.rescale(split, D(size), cost)
    if split:
        assert sum((p.shares for p in after.values()), D(0)) == D(size)
        assert sum((p.cost_usd for p in after.values()), D(0)) == cost
        assert all(p.shares >= 0 and p.cost_usd >= 0 for p in after.values())
        assert sum((c.exposure_delta_usd for c in charges), D(0)) == cost - positions[KEY].cost_usd
