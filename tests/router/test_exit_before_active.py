"""A leader SELL made before the subscription last became ACTIVE (delivered late) is not mirrored when it was made
before the subscription was created, nor on a position that opened since, or when nothing is held: the
subscription's copies since then mirror the leader's BUYs made after it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.router.adapters.store import _read_wallets
from services.router.domain.decide import route
from services.router.domain.filters import exit_before_active
from services.router.domain.model import OrderIntent, Reason, Side, Skip
from tests.router.factories import ASSET, NOW_MS, follower, market, policy, state, trade

D = Decimal
ACTIVE = 1_790_270_000_400  # became active at .400 s: the venue stamps trades to the second
SINCE = 1_790_270_000_000


@pytest.mark.parametrize(("side", "venue_ms", "active_ms", "held", "opened_ms", "skipped"), [
    (Side.SELL, SINCE - 1000, ACTIVE, D(62), SINCE + 5000, True),  # the position opened since: a newer BUY's copy
    (Side.SELL, SINCE - 1000, ACTIVE, D(62), SINCE, True),  # opened in that second
    (Side.SELL, SINCE - 1000, ACTIVE, D(0), 0, True),  # nothing held (a copy BUY in flight, or none)
    (Side.SELL, SINCE - 1000, ACTIVE, D(62), SINCE - 1, False),  # held from before (bought before a pause)
    (Side.SELL, SINCE - 1000, ACTIVE, D(62), 0, False),  # when it opened not known: mirrored, as before
    (Side.SELL, SINCE, ACTIVE, D(62), SINCE + 5000, False),  # made in the second it became active
    (Side.SELL, SINCE - 1000, 0, D(0), 0, False),  # active time unknown
    (Side.SELL, 0, ACTIVE, D(0), 0, False),  # venue time unknown
    (Side.BUY, SINCE - 1000, ACTIVE, D(0), 0, False),  # a BUY: before_active's
])
def test_an_exit_before_the_subscription_became_active(side: Side, venue_ms: int, active_ms: int, held: Decimal,
                                                       opened_ms: int, skipped: bool) -> None:
    got = exit_before_active(active_ms, trade(side=side, venue_time_ms=venue_ms), held, opened_ms)
    assert (got[0] if got else None) == (Reason.TRADE_BEFORE_ACTIVE if skipped else None)


CREATED = SINCE - 60_000 + 700  # created at .700 s a minute before its last activation (a resume)


@pytest.mark.parametrize(("venue_ms", "created_ms", "opened_ms", "skipped"), [
    (SINCE - 1000, ACTIVE, SINCE - 1, True),  # made before it was created: the position held from before is not its
    (SINCE - 1000, ACTIVE, 0, True),  # ... when the position's opening is not known either
    (CREATED - 700 - 1, CREATED, SINCE - 120_000, True),  # made in the second before the one it was created in
    (CREATED - 700, CREATED, SINCE - 120_000, False),  # made in the second it was created in: during the pause
    (SINCE - 1000, CREATED, SINCE - 1, False),  # made during the pause: the position held from before follows it
    (SINCE - 1000, CREATED, SINCE + 5000, True),  # made during the pause, the position opened since the resume
    (SINCE - 1000, 0, SINCE - 1, False),  # creation time not known: the position's rule
])
def test_an_exit_before_the_subscription_was_created(venue_ms: int, created_ms: int, opened_ms: int,
                                                     skipped: bool) -> None:
    got = exit_before_active(ACTIVE, trade(side=Side.SELL, venue_time_ms=venue_ms), D(62), opened_ms, created_ms)
    assert (got[0] if got else None) == (Reason.TRADE_BEFORE_ACTIVE if skipped else None)


def test_route_reads_each_wallets_position_opening() -> None:
    """Two followers of the leader: the one that subscribed before the SELL follows it; the one that subscribed
    after, its position a copy of a newer BUY, does not."""
    tr = trade(side=Side.SELL, size=D(100), venue_time_ms=NOW_MS - 3_600_000)
    old, new = follower("sub_old", "w_old"), follower("sub_new", "w_new", active_since_ms=NOW_MS - 1_800_000)
    states = {"w_old": state(held_size=D(50)), "w_new": state(held_size=D(50))}
    opened = {("w_old", ASSET): NOW_MS - 7_200_000, ("w_new", ASSET): NOW_MS - 600_000}
    kept, skipped = route(tr, [old, new], market(), states, D(150), policy(), opened)
    assert isinstance(kept, OrderIntent) and kept.size == D("33.33")
    assert isinstance(skipped, Skip) and skipped.reason is Reason.TRADE_BEFORE_ACTIVE
    assert "position opened 1200.0s after it" in skipped.detail


def test_the_wallet_rows_give_when_each_sell_assets_position_opened() -> None:
    rows: list[list[Any]] = [
        ["w_1", "25", "c1", [], [[ASSET, "62.5", "sub_A"]], None, [[ASSET, NOW_MS - 600_000]]],
        ["w_2", "10", "c1", [], [[ASSET, "25"]], None, None],  # a batch of BUYs: none read
        ["w_3", "10", "c1", [], [[ASSET, "25"]], None]]  # a row of a LOAD before it read them
    opened: dict[tuple[str, str], int] = {}
    (_, _, sizes, _, _, _, _), openers = _read_wallets(rows, (), opened)
    assert opened == {("w_1", ASSET): NOW_MS - 600_000}
    assert sizes == {("w_1", ASSET): D("62.5"), ("w_2", ASSET): D(25), ("w_3", ASSET): D(25)}
    assert openers == {("w_1", ASSET): "sub_A"}
