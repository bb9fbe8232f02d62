"""The rules of the re-size of a PAPER SELL refused for lack of shares, as for LIVE: once only, within its window,
a copy of a split position capped to its subscription's part, the venue of a refused SELL found at start its
stored order's; LIVE re-sizes stay with reconciliation, PAPER ones never reach it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.executor.adapters.order_store import Change
from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.paper_selling import PaperHolding
from services.executor.domain.ticket import INSIDERS, PAPER, Ticket
from services.executor.reconciling import Reconciler
from services.executor.resizing import NOT_ENOUGH, Resizer, paper_count, resized_id
from tests.executor.conftest import make_order
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
W = "w_paper"


def _sell(i: int = 1, **kw: Any) -> epb.Order:
    base: dict[str, Any] = dict(follower_wallet_id=W, subscription_id="sub_A", side=cpb.SIDE_SELL, amount_usd="",
                                size="30", mode=cpb.EXECUTION_MODE_PAPER)
    return make_order(i, **{**base, **kw})


def _refused(order: epb.Order, venue: str = PAPER, reason: str = NOT_ENOUGH) -> Change:
    return Change(Ticket(order, venue, None, 0), OrderLife(order.client_order_id, State.REJECTED, reason=reason))


class _Store:
    """The refused SELLs stored and the position's split."""

    def __init__(self, parts: dict[str, Decimal] | None = None,
                 refused: list[tuple[bytes, float, str]] | None = None) -> None:
        self.split = parts
        self.refused = refused or []
        self.asked: list[str] = []

    async def refused_sells(self, window_s: float, venue: str) -> list[tuple[bytes, float]]:
        self.asked.append(venue)
        return [(proto, age_s) for proto, age_s, stored in self.refused if stored == venue]

    async def parts(self, follower_wallet_id: str, asset_id: str) -> dict[str, Decimal] | None:
        return self.split


class _Count:
    """The paper count: ``held`` shares, or unreadable (None) while ``held`` is None."""

    def __init__(self, held: str | None) -> None:
        self.held = None if held is None else D(held)
        self.asked: list[Ticket] = []

    async def __call__(self, t: Ticket) -> Decimal | None:
        self.asked.append(t)
        return self.held


def _resizer(store: _Store, count: _Count, sent: list[epb.Order], clock: list[float] | None = None,
             known: set[str] | None = None) -> Resizer:
    async def resubmit(order: epb.Order) -> None:
        sent.append(order)

    async def _known(ids: list[str]) -> set[str]:
        return set(ids) & (known or set())

    now = clock if clock is not None else [0.0]
    return Resizer(store, PAPER, count, known=_known, resubmit=resubmit, clock=lambda: now[0], retry_s=5.0,
                   window_s=900.0)


async def test_a_refused_paper_sell_is_resized_once_and_its_resize_refused_again_is_not() -> None:
    sent: list[epb.Order] = []
    r = _resizer(_Store(), _Count("20"), sent)
    r.observe([_refused(_sell())])
    await r.due()
    assert [(o.client_order_id, D(o.size)) for o in sent] == [(resized_id(_sell().client_order_id), D(20))]
    r.observe([_refused(sent[0])])  # the re-sized order refused in its turn
    await r.due()
    assert len(sent) == 1 and r.next_at() is None and r.stats.resized == 1


@pytest.mark.parametrize("change", [
    _refused(_sell(), venue=INSIDERS),  # LIVE: reconciliation's
    _refused(_sell(), reason="INVALID_ORDER_MIN_SIZE"),
    _refused(_sell(side=cpb.SIDE_BUY, amount_usd="10", size="")),
], ids=["live", "another reason", "a buy"])
def test_only_a_paper_sell_refused_for_lack_of_shares_is_queued(change: Change) -> None:
    r = _resizer(_Store(), _Count("20"), [])
    r.observe([change])
    assert r.next_at() is None


async def test_reconciliation_queues_live_refusals_only() -> None:
    rec = Reconciler(_Store(), None, None, interval_s=300.0, known=_none_known)  # type: ignore[arg-type]
    rec.observe([_refused(_sell())])
    assert rec.resizer.next_at() is None
    rec.observe([_refused(_sell(2), venue=INSIDERS)])
    assert rec.resizer.next_at() is not None


async def _none_known(ids: list[str]) -> set[str]:
    return set()


async def test_a_paper_copy_of_a_split_position_is_resized_to_its_subscriptions_part() -> None:
    """sub_A holds 5 of the wallet's 20 paper shares, sub_B 15: sub_A's copy SELL of 30 is sent again for 5."""
    sent: list[epb.Order] = []
    r = _resizer(_Store({"sub_A": D(5), "sub_B": D(15)}), _Count("20"), sent)
    r.observe([_refused(_sell())])
    await r.due()
    assert [D(o.size) for o in sent] == [D(5)]


async def test_a_paper_resize_not_made_is_tried_again_until_its_window_is_over() -> None:
    sent: list[epb.Order] = []
    clock = [0.0]
    count = _Count(None)
    r = _resizer(_Store(), count, sent, clock)
    r.observe([_refused(_sell())])
    await r.due()
    assert (r.next_at(), r.stats.resize_retries) == (5.0, 1)
    clock[0] = 4.0
    await r.due()  # not due yet
    assert len(count.asked) == 1
    clock[0] = 900.0
    await r.due()
    assert (r.next_at(), r.stats.resizes_abandoned, sent) == (None, 1, [])


async def test_a_refused_sell_found_at_start_is_resized_on_the_venue_it_was_stored_with() -> None:
    """A crash left a PAPER refusal without its re-size, and another already re-sized: the first is re-sized as
    PAPER (before, only LIVE ones were looked for at start)."""
    left, done = _sell(1), _sell(2)
    store = _Store(refused=[(left.SerializeToString(), 30.0, PAPER), (done.SerializeToString(), 20.0, PAPER),
                            (_sell(3).SerializeToString(), 10.0, INSIDERS)])
    sent: list[epb.Order] = []
    count = _Count("20")
    r = _resizer(store, count, sent, known={resized_id(done.client_order_id)})
    await r.load()
    await r.due()
    assert store.asked == [PAPER]
    assert [(t.client_order_id, t.venue) for t in count.asked] == [(left.client_order_id, PAPER)]
    assert [o.client_order_id for o in sent] == [resized_id(left.client_order_id)]


class _Holding:
    def __init__(self, held: str, selling: dict[str, Decimal]) -> None:
        self.holding = PaperHolding(D(held), selling)

    async def read(self, wallet_id: str, asset_id: str, sending: Any) -> PaperHolding:
        sending()
        return self.holding


async def test_the_paper_count_waits_for_the_paper_sells_of_the_token_under_way() -> None:
    """Another SELL of the token filled at the paper venue and not booked: the booked 20 are not what the wallet
    holds yet (a re-size on it would be refused again, for good); tried again once it is booked."""
    assert await paper_count(_Holding("20", {"co_other": D(0)}), W, "tok") is None
    assert await paper_count(_Holding("5", {}), W, "tok") == D(5)
