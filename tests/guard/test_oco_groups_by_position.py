"""The engine's OCO groups are the exits of one position: a closing fire cancels the members of its group on its
own position (wallet, follower wallet, asset), never a same-named trigger guarding another asset or another
user's wallet (groups stored before control refused a group spanning positions may span them)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.guard.domain.trigger_index import Engine, Prices, load
from services.guard.domain.trigger_model import Kind, Origin, Reason, Source, State, TriggerSpec
from services.guard.domain.trigger_rows import TriggerRow

D = Decimal
A, B = "asset-1", "asset-2"
ALICE, BOB = ("0x" + "a" * 40, "w_alice"), ("0x" + "b" * 40, "w_bob")


def spec(tid: str, kind: Kind, price: str, *, owner: tuple[str, str] = ALICE, asset: str = A,
         group: str = "g", fraction: str = "1") -> TriggerSpec:
    """The engine's spec of a stored ARMED trigger."""
    now = datetime.now(UTC)
    return TriggerRow(id=tid, wallet=owner[0], follower_wallet_id=owner[1], subscription_id="", asset_id=asset,
                      kind=kind, trigger_price=D(price), trail_pct=D(0), activation_price=D(0), size=D(0),
                      sell_fraction=D(fraction), oco_group=group, price_source=Source.BEST_BID, state=State.ARMED,
                      state_reason="", high_water_mark=D(0), source=Origin.MANUAL, order_id="", fire_count=0,
                      version=1, create_time=now, update_time=now, fired_time=None).spec()


def bid(p: str) -> Prices:
    return Prices(best_bid=D(p))


def engines(specs: list[TriggerSpec]) -> list[Engine]:
    """The same triggers loaded in bulk (start-up) and armed one by one (reloads)."""
    one_by_one = Engine()
    for s in specs:
        one_by_one.upsert(s)
    return [load(specs), one_by_one]


def test_a_closing_fire_leaves_a_same_named_stop_on_another_asset_armed() -> None:
    for engine in engines([spec("tp", Kind.TAKE_PROFIT, "0.70"), spec("sl", Kind.STOP_LOSS, "0.30", asset=B)]):
        out = engine.on_tick(A, bid("0.75"), stale=False)
        assert [f.spec.id for f in out.fired] == ["tp"] and out.cancelled == []
        assert engine.ids() == {"sl"}
        assert [f.spec.id for f in engine.on_tick(B, bid("0.25"), stale=False).fired] == ["sl"]


def test_a_closing_fire_leaves_another_wallets_same_named_stop_armed() -> None:
    for engine in engines([spec("tp", Kind.TAKE_PROFIT, "0.70"), spec("sl", Kind.STOP_LOSS, "0.30", owner=BOB)]):
        out = engine.on_tick(A, bid("0.75"), stale=False)
        assert [f.spec.id for f in out.fired] == ["tp"] and out.cancelled == []
        assert [f.spec.id for f in engine.on_tick(A, bid("0.25"), stale=False).fired] == ["sl"]


def test_two_wallets_same_named_take_profits_crossed_by_one_tick_both_fire() -> None:
    for engine in engines([spec("tp_a", Kind.TAKE_PROFIT, "0.70"), spec("tp_b", Kind.TAKE_PROFIT, "0.70", owner=BOB),
                           spec("sl_a", Kind.STOP_LOSS, "0.30"), spec("sl_b", Kind.STOP_LOSS, "0.30", owner=BOB)]):
        out = engine.on_tick(A, bid("0.75"), stale=False)
        assert sorted(f.spec.id for f in out.fired) == ["tp_a", "tp_b"]
        assert sorted((c.spec.id, c.reason, c.by) for c in out.cancelled) == [
            ("sl_a", Reason.OCO_SIBLING_FIRED, "tp_a"), ("sl_b", Reason.OCO_SIBLING_FIRED, "tp_b")]
        assert len(engine) == 0


def test_a_closing_fire_still_cancels_its_own_positions_siblings() -> None:
    for engine in engines([spec("tp", Kind.TAKE_PROFIT, "0.70"), spec("sl", Kind.STOP_LOSS, "0.30"),
                           spec("rung", Kind.TAKE_PROFIT, "0.90", fraction="0.5"),
                           spec("other", Kind.STOP_LOSS, "0.30", group="h")]):
        out = engine.on_tick(A, bid("0.75"), stale=False)
        assert [f.spec.id for f in out.fired] == ["tp"]
        assert sorted(c.spec.id for c in out.cancelled) == ["rung", "sl"]
        assert engine.ids() == {"other"}
