"""A leader's exit is copied only on what the subscription's copies bought and still hold, in any market (pure).

A position bought by hand (MANUAL) with no split kept is read as the executor reads it: all of no subscription
(``holdings.by_hand``, LOAD's opener ""). A copy BUY booked on it keeps a split, whose part of no subscription is the
follower's own. The real path: ``test_identified_exit_owner_routed.py``.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.adapters.store import _read_wallets
from services.router.domain.decide import route
from services.router.domain.holdings import bought_by, by_hand
from services.router.domain.model import FollowerState, OrderIntent, Reason, Side, Skip
from tests.router.factories import follower, market, policy, state, trade

D = Decimal


def test_a_position_bought_by_hand_is_read_as_no_subscriptions() -> None:
    split = {"": ["50", "25"], "sub_A": ["30", "15"]}
    rows = [["w_1", "300", "0xc", [["0xc", "300"]],
             [["111", "500", ""], ["222", "62.5", "sub_A"], ["333", "80", "40", split, ""], ["444", "7"]], None]]
    (_, _, sizes, _, parts, _, _), openers = _read_wallets(rows)
    assert parts == {("w_1", "111"): {"": D(500)}, ("w_1", "333"): {"": D(50), "sub_A": D(30)}}
    assert openers == {("w_1", "222"): "sub_A"}
    assert sizes[("w_1", "111")] == D(500) and sizes[("w_1", "444")] == D(7)


def _sell(held: FollowerState, sold: str = "250", leader_before: str = "250") -> OrderIntent | Skip:
    f = follower("sub_1")
    [d] = route(trade(side=Side.SELL, size=D(sold), price=D("0.55")), [f], market(), {f.follower_wallet_id: held},
                D(leader_before), policy())
    return d


def test_a_close_never_sells_shares_bought_by_hand() -> None:
    d = _sell(state(held_size=D(500), held_parts=by_hand(D(500))))
    assert isinstance(d, Skip) and d.reason is Reason.NOTHING_HELD, d
    assert not bought_by(state(held_size=D(500), held_parts=by_hand(D(500))), "sub_1")


@pytest.mark.parametrize(("held", "sold", "size"), [
    # its copy BUY booked on shares bought by hand: its own part, all of it on the leader's close
    (state(held_size=D("562.5"), held_parts={"": D(500), "sub_1": D("62.5")}), "250", D("62.5")),
    # its copy opened it, the follower added by hand: the leader's fraction of the copy's part, not of the position
    (state(held_size=D("562.5"), held_parts={"sub_1": D("62.5"), "": D(500)}, opened_by="sub_1"), "125", D("31.25")),
    # its copy opened it, no split kept (every position before splits): the whole position
    (state(held_size=D("62.5"), opened_by="sub_1"), "250", D("62.5")),
    # a copy's position of no known subscription, no split kept (a row from before opener ids): as before
    (state(held_size=D("62.5")), "250", D("62.5")),
])
def test_a_close_sells_what_the_subscriptions_copies_bought(held: FollowerState, sold: str, size: Decimal) -> None:
    d = _sell(held, sold)
    assert isinstance(d, OrderIntent) and d.size == size, d


def test_a_copy_buy_in_flight_on_shares_bought_by_hand_still_leaves_the_exit_to_the_executor() -> None:
    """The copy BUY may fill: its shares are the subscription's, sold once it is answered (sized by the executor)."""
    d = _sell(state(held_size=D(500), held_parts=by_hand(D(500)), reserved_market_usd=D(25)))
    assert isinstance(d, OrderIntent) and d.size is None and d.sell_fraction == 1, d
