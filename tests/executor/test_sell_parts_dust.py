"""Every part of a split position closes to nothing, whatever the order of the closes (pure, property based).

A wallet's subscriptions buy the token (share steps of 0.01); exits and manual SELLs take of every part in
proportion (``subscription_shares.take``), leaders sell some, leaving sub-cent leftovers in the parts; then every
leader closes, in any order, each copy sized by the router (``size_sell``) and by the executor (``copy_sellable``
and ``fraction_size``: they must agree) and filled before the next. No SELL exceeds what the wallet holds, none
takes a share of another part of a share step or more, and nothing is left: no copy can sell a part below a share
step, so the last close sells those. The market minimum is a share step here (a greater one keeps any part below
it whoever sizes it). A second property sizes closes while others are in flight and fills them in any order."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from common.decimals import MIN_HELD_SHARES, ZERO
from common.parts import others_own
from services.executor.domain import subscription_shares as ss
from services.executor.domain.sell_sizing import copy_sellable, fraction_size
from services.router.domain.sells import size_sell
from tests.router.factories import state

D = Decimal
STEP = D("0.01")
HUNDRED = D(100)
SUBS = ("sub_A", "sub_B", "sub_C", "sub_D")

buys = st.lists(st.integers(1, 50_000), min_size=1, max_size=len(SUBS))  # each subscription's cents
# before the closes: (who, percent) an exit of a subscription's trigger or a manual SELL ("") of a percent of the
# wallet's shares, or (subscription, -percent) its leader selling a percent of its position
moves = st.lists(st.tuples(st.sampled_from((*SUBS, "")), st.integers(-99, 99).filter(bool)), max_size=6)


def _sized(parts: dict[str, Decimal], sub: str, fraction: Decimal, selling: Decimal = ZERO,
           copies: dict[str, Decimal] | None = None) -> Decimal | None:
    """The shares a copy of ``sub`` for a leader's ``fraction`` sells, as the executor sizes it (None: none)."""
    held = sum(parts.values(), ZERO)
    sellable = copy_sellable(parts, sub, held, selling, others_own(parts, copies or {}, sub))
    size = sellable if isinstance(sellable, tuple) else fraction_size(sellable, fraction, STEP)
    return None if isinstance(size, tuple) else size


def _routed(parts: dict[str, Decimal], sub: str, fraction: Decimal, selling: Decimal = ZERO,
            copies: dict[str, Decimal] | None = None) -> Decimal | None:
    """The same copy as the router sizes it."""
    got = size_sell(state(held_size=sum(parts.values(), ZERO), held_parts=parts, reserved_sell_size=selling,
                          selling_by=copies or None), fraction * HUNDRED, HUNDRED, STEP, sub)
    assert not isinstance(got, tuple) or got[1], got
    return got if isinstance(got, Decimal) else None


def _filled(parts: dict[str, Decimal], key: str, size: Decimal) -> dict[str, Decimal]:
    """The parts once a SELL of ``key``'s (its trigger's, its copy's; "" a manual one) of ``size`` filled."""
    assert ZERO < size <= sum(parts.values(), ZERO), (size, parts)  # never more than the wallet holds
    taken = ss.take({k: ss.Part(v) for k, v in parts.items()}, key, size)
    return {k: v - taken.get(k, ZERO) for k, v in parts.items() if v - taken.get(k, ZERO) > ZERO}


def _bought(cents: list[int], before: list[tuple[str, int]]) -> dict[str, Decimal]:
    """The parts after the buys and the moves before the closes."""
    parts = {sub: D(c) * STEP for sub, c in zip(SUBS, cents, strict=False)}
    for who, pct in before:
        size: Decimal | None
        if pct > 0:  # an exit or a manual SELL: of the wallet's shares
            size = (sum(parts.values(), ZERO) * pct / HUNDRED).quantize(STEP, rounding=ROUND_DOWN)
        else:  # a leader's partial SELL: its copy
            size = _sized(parts, who, D(-pct) / HUNDRED) if who in parts else None
        if size:
            parts = _filled(parts, who, size)
    return parts


def _close(parts: dict[str, Decimal], sub: str) -> dict[str, Decimal]:
    """``sub``'s leader closes: its copy sized by both, filled; no other part of a share step or more is taken."""
    size = _sized(parts, sub, D(1))
    assert _routed(parts, sub, D(1)) == size  # the router and the executor size it alike
    if size is None:
        return parts
    after = _filled(parts, sub, size)
    assert all(after.get(k) == v for k, v in parts.items() if k != sub and v >= MIN_HELD_SHARES), (sub, parts, after)
    return after


@settings(max_examples=400, deadline=None)
@given(cents=buys, before=moves, order=st.permutations(SUBS))
def test_every_close_in_any_order_leaves_nothing(cents: list[int], before: list[tuple[str, int]],
                                                 order: list[str]) -> None:
    parts = _bought(cents, before)
    if not any(v >= MIN_HELD_SHARES for v in parts.values()):
        return  # dust alone before any close (an exit left each part below a step): no copy holds any of it
    for sub in order:
        parts = _close(parts, sub)
    assert sum(parts.values(), ZERO) == ZERO, parts


@settings(max_examples=400, deadline=None)
@given(cents=buys, before=moves, order=st.permutations(SUBS), fills=st.randoms(use_true_random=False),
       overlap=st.integers(1, len(SUBS)))
def test_closes_sized_while_others_are_in_flight_never_sell_more_than_held(
        cents: list[int], before: list[tuple[str, int]], order: list[str], fills: object, overlap: int) -> None:
    """Closes are sized ``overlap`` at a time, the copies of the earlier ones in flight, filled in any order."""
    parts = _bought(cents, before)
    start = sum(parts.values(), ZERO)
    for i in range(0, len(order), overlap):
        flight: list[tuple[str, Decimal]] = []
        for sub in order[i:i + overlap]:
            copies = {s: n for s, n in flight}
            selling = sum(copies.values(), ZERO)
            size = _sized(parts, sub, D(1), selling, copies)
            assert _routed(parts, sub, D(1), selling, copies) == size
            if size is not None:
                flight.append((sub, size))
        fills.shuffle(flight)  # type: ignore[attr-defined]
        for sub, size in flight:
            parts = _filled(parts, sub, size)
    assert ZERO <= sum(parts.values(), ZERO) <= start
