"""A copy BUY that ended LOST (filled at the venue, its fill never booked) and a position bought by hand: the count
raised by the copy's fill is booked to the copy's subscription (its part of the split), so its leader's close sells
it, and the hand-bought shares stay no subscription's. Only a raise after a LOST copy BUY of the token in the last
``WINDOW_S``, each such BUY credited once and at most its size, in the order they ended (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.domain import subscription_shares as ss
from services.executor.domain.lost_buys import LostBuy, claims, most_bought
from services.executor.ports import Answer
from services.executor.reconciling import Reconciler
from tests.executor.conftest import ASSET, CONDITION, rows
from tradingtools.execution.v1 import execution_pb2 as epb

WALLET = LiveWallet("w_1", "0x" + "1" * 40)
OTHER = "1" + ASSET[1:]  # another token


@pytest.mark.parametrize(("args", "most"), [
    ((D(30), D(10), None, D(0), D("0.4"), 0), D(20)),  # a sized BUY: what it did not fill
    ((None, D(0), D(20), D(0), D("0.4"), 0), D(50)),  # it named its limit: the USD at it
    ((None, D(0), D(20), D(0), D("0.51"), 200), D(40)),  # slipped up 2 % from 0.50: the USD at 0.50
    ((None, D(0), D(20), D(0), D("0.3"), 0), D("66.66666666")),  # rounded down
    ((None, D(0), D(20), D(20), D("0.4"), 0), D(0)),  # filled (and booked) in full
    ((None, D(0), None, D(0), None, 0), D(0)),
])
def test_the_most_a_lost_buy_may_have_bought(args: tuple[Any, ...], most: D) -> None:
    assert most_bought(*args) == most


def test_a_raise_is_claimed_in_order_each_at_most_its_size() -> None:
    a, b, c = LostBuy("a", "sub_A", D(50)), LostBuy("b", "sub_B", D(50)), LostBuy("c", "sub_C", D(0))
    assert claims(D(80), [a, b, c]) == [(a, D(50)), (b, D(30))]
    assert claims(D(30), [a, b]) == [(a, D(30))]  # b credited nothing: a later count may still show its fill
    assert claims(D(0), [a]) == []


class Venue:
    """The Insiders API counting ``size`` shares of ASSET (none listed when 0), now."""

    def __init__(self, size: str) -> None:
        self.size = size

    async def positions(self, wallet_id: str) -> Answer:
        listed = [{"tokenId": ASSET, "conditionId": CONDITION, "outcome": "Yes", "size": self.size,
                   "avgPrice": "0.4", "redeemable": False}] if D(self.size) else []
        return Answer(200, {"asOf": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "positions": listed})


async def _known(ids: list[str]) -> set[str]:
    return set(ids)


def _held(db_url: str, origin: str = "MANUAL", sub: str | None = None) -> None:
    """100 shares at 0.40 booked two minutes ago (MANUAL: bought by hand, no split kept)."""
    opener = "NULL" if sub is None else f"'{sub}'"
    rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd,"
                 " id, state, origin, subscription_id, venue, updated_at, opened_at, reconciled_at) VALUES"
                 f" ('w_1', '{ASSET}', '{CONDITION}', '{WALLET.wallet}', 100, 0.4, 40, 'pos_1', 'OPEN', '{origin}',"
                 f" {opener}, 'INSIDERS', now() - interval '120 s', now() - interval '120 s',"
                 " now() - interval '120 s') RETURNING 1")


def _lost_buy(db_url: str, coid: str, sub: str, ended_s: float, *, usd: str = "20", limit: str = "0.4",
              size: str | None = None, asset: str = ASSET, origin: str = "COPY", slippage_bps: int = 0) -> None:
    """A LIVE BUY of ``sub`` that ended LOST ``ended_s`` ago: by default a market BUY of $20 at a 0.40 limit (50
    shares), its limit moved by ``slippage_bps`` from the best ask; ``size``: a GTC BUY of that many shares."""
    subscription = f"'{sub}'" if sub else "NULL"
    proto = epb.Order(max_slippage_bps=slippage_bps).SerializeToString()
    rows(db_url, "INSERT INTO orders (client_order_id, state, venue, origin, subscription_id, follower_wallet_id,"
                 " asset_id, side, order_type, amount_usd, size, limit_price, order_proto, created_at, terminal_at)"
                 f" VALUES ('{coid}', 'LOST', 'INSIDERS', '{origin}', {subscription}, 'w_1',"
                 f" '{asset}', 'BUY', '{'GTC' if size else 'FAK'}', {'NULL' if size else usd}, {size or 'NULL'},"
                 f" {limit}, %s, now() - make_interval(secs => {ended_s + 30}),"
                 f" now() - make_interval(secs => {ended_s})) RETURNING 1", proto)


async def _round(db_url: str, count: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        await Reconciler(ReconcileStore(pool), Venue(count), None, interval_s=300.0, known=_known).reconcile(WALLET)
    finally:
        await pool.close()


def _parts(db_url: str) -> tuple[D, dict[str, D] | None]:
    """The position's size and each part's shares as kept (None: no split kept)."""
    [(size, kept)] = rows(db_url, "SELECT size, subscription_shares FROM positions WHERE asset_id = %s", ASSET)
    return size, None if kept is None else {k: p.shares for k, p in ss.decode(kept).items()}


async def _sellable(db_url: str, *subs: str | None) -> list[D | str]:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        got = [await OrderStore(pool).sellable("w_1", ASSET, s) for s in subs]
    finally:
        await pool.close()
    return [x[0] if isinstance(x, tuple) else x for x in got]


@pytest.mark.integration
async def test_a_raise_after_a_lost_copy_buy_on_a_manual_position_is_the_copys_subscriptions(db_url: str) -> None:
    """The reviewer's case: the follower bought 100 by hand; sub_S's copy BUY of $20 (50 shares) ended LOST, filled.
    Its leader's close sells those 50, no other leader's any, the hand-bought 100 stay no subscription's."""
    _held(db_url)
    _lost_buy(db_url, "lost_b1", "sub_S", 30)
    await _round(db_url, "150")
    assert _parts(db_url) == (D(150), {"": D(100), "sub_S": D(50)})
    assert await _sellable(db_url, "sub_S", "sub_X", None) == [D(50), "NOTHING_HELD", D(150)]
    [(cost, kept)] = rows(db_url, "SELECT cost_usd, subscription_shares FROM positions")
    assert cost == D(60) and ss.decode(kept)["sub_S"].cost_usd == D(20)  # at the position's average cost
    # guard's folds see sub_S's part as a correction fill of its own (no PnL)
    assert rows(db_url, "SELECT subscription_id, side, size, price FROM fills WHERE order_id LIKE 'reconcile_%%'") == [
        ("sub_S", "BUY", D(50), D("0.4"))]


Lost = tuple[str, str, float, dict[str, Any]]  # client order id, subscription, seconds since its end, _lost_buy's


async def _one_round_after(db_url: str, count: str, *lost: Lost) -> dict[str, D] | None:
    _held(db_url)
    for coid, sub, ended_s, kw in lost:
        _lost_buy(db_url, coid, sub, ended_s, **kw)
    await _round(db_url, count)
    size, parts = _parts(db_url)
    assert size == D(count)
    return parts


@pytest.mark.integration
@pytest.mark.parametrize(("count", "lost", "parts"), [
    # bought more by hand, no LOST BUY: no subscription's, as before
    ("150", [], None),
    # a LOST BUY past the window, of another token, or bought by hand (MANUAL): no copy's raise
    ("150", [("lost_b1", "sub_S", 16 * 60, {})], None),
    ("150", [("lost_b1", "sub_S", 30, {"asset": OTHER})], None),
    ("150", [("lost_b1", "", 30, {"origin": "MANUAL"})], None),
    # a raise larger than the LOST BUY's size: at most that size, the rest no subscription's
    ("180", [("lost_b1", "sub_S", 30, {})], {"": D(130), "sub_S": D(50)}),
    ("180", [("lost_b1", "sub_S", 30, {"size": "30"})], {"": D(150), "sub_S": D(30)}),  # a GTC BUY: its size
    # a market BUY's limit 0.51 was slipped 2 % up from a best ask of 0.50: $20 bought 40 shares at most
    ("180", [("lost_b1", "sub_S", 30, {"limit": "0.51", "slippage_bps": 200})], {"": D(140), "sub_S": D(40)}),
    # a raise smaller than it (the fee, a partial fill): all of it
    ("140", [("lost_b1", "sub_S", 30, {})], {"": D(100), "sub_S": D(40)}),
    # two LOST BUYs: in the order they ended, each at most its size
    ("180", [("lost_b2", "sub_T", 20, {}), ("lost_b1", "sub_S", 30, {})], {"": D(100), "sub_S": D(50),
                                                                            "sub_T": D(30)}),
    ("220", [("lost_b2", "sub_T", 20, {}), ("lost_b1", "sub_S", 30, {})], {"": D(120), "sub_S": D(50),
                                                                            "sub_T": D(50)}),
    # a count down: the LOST BUY explains no raise, the parts are scaled as before
    ("90", [("lost_b1", "sub_S", 30, {})], None),
])
async def test_only_a_raise_a_recent_lost_copy_buy_of_the_token_explains_is_credited(
        db_url: str, count: str, lost: list[Lost],
        parts: dict[str, D] | None) -> None:
    assert await _one_round_after(db_url, count, *lost) == parts


@pytest.mark.integration
async def test_a_lost_buy_is_credited_once(db_url: str) -> None:
    """Ended 3 s ago (the count inside its grace): credited in the first round; a second round's raise (bought by hand
    since) is no subscription's, and a round that agrees changes nothing."""
    assert await _one_round_after(db_url, "120", ("lost_b1", "sub_S", 3, {})) == {"": D(100), "sub_S": D(20)}
    await _round(db_url, "120")
    assert _parts(db_url) == (D(120), {"": D(100), "sub_S": D(20)})
    await _round(db_url, "170")
    assert _parts(db_url) == (D(170), {"": D("141.66666667"), "sub_S": D("28.33333333")})  # scaled, as any raise
    assert rows(db_url, "SELECT count(*) FROM fills WHERE subscription_id = 'sub_S' AND side = 'BUY'") == [(2,)]


@pytest.mark.integration
async def test_a_lost_buy_a_count_after_its_grace_showed_is_not_credited_later(db_url: str) -> None:
    """A count taken well after the LOST's end agreed with the booked 100 (the copy did not fill); a later raise is
    the follower's, not sub_S's."""
    _held(db_url)
    _lost_buy(db_url, "lost_b1", "sub_S", 30)
    await _round(db_url, "100")
    await _round(db_url, "150")
    assert _parts(db_url) == (D(150), None)


@pytest.mark.integration
async def test_a_copy_position_of_another_subscription_gives_the_raise_to_the_lost_copys(db_url: str) -> None:
    """sub_A's copy opened the position; sub_S's copy BUY ended LOST and filled: its 50 are sub_S's, not sub_A's."""
    _held(db_url, "COPY", "sub_A")
    _lost_buy(db_url, "lost_b1", "sub_S", 30)
    await _round(db_url, "150")
    assert _parts(db_url) == (D(150), {"sub_A": D(100), "sub_S": D(50)})
    assert await _sellable(db_url, "sub_A", "sub_S") == [D(100), D(50)]


@pytest.mark.integration
async def test_an_external_position_keeps_the_wallets_sizing(db_url: str) -> None:
    """No position open: the LOST copy's fill opens an EXTERNAL one, sized on the wallet's shares for every
    subscription (as before); an EXTERNAL position raised after a LOST copy BUY keeps no split either."""
    _lost_buy(db_url, "lost_b1", "sub_S", 30)
    await _round(db_url, "50")
    assert _parts(db_url) == (D(50), None)
    assert await _sellable(db_url, "sub_S", "sub_X") == [D(50), D(50)]
    rows(db_url, "DELETE FROM positions RETURNING 1")
    _held(db_url, "EXTERNAL")
    _lost_buy(db_url, "lost_b2", "sub_S", 30)
    await _round(db_url, "150")
    assert _parts(db_url) == (D(150), None)
    assert await _sellable(db_url, "sub_S", "sub_X") == [D(150), D(150)]
