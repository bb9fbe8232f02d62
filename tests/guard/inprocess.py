"""A guard core run in process on a fake store (no PostgreSQL, no Redis): for tests of the per-tick path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from services.guard.coordinator import Clients, Guard, Stores
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_index import load
from services.guard.domain.trigger_model import TriggerSpec
from tradingtools.market.v1 import market_pb2 as mpb

NOW_NS = 1_700_000_000_000_000_000


class FakeStore:
    """Records hold / release writes and resolution cancels; nothing else is reached by ticks."""

    def __init__(self) -> None:
        self.holds: list[tuple[list[str], bool]] = []
        self.cancelled_assets: list[list[str]] = []

    async def mark_submitted(self, *_a: Any) -> None:
        return None

    async def set_holds(self, changes: Sequence[tuple[Sequence[str], bool, TickInfo]]) -> int:
        self.holds.extend((list(ids), held) for ids, held, _t in changes)
        return len(changes)

    async def cancel_assets(self, asset_ids: Iterable[str], reason: str, tick: TickInfo) -> list[Any]:
        self.cancelled_assets.append(sorted(asset_ids))
        return []


class _Kick:
    def kick(self) -> None:
        return None


def in_process_guard(specs: list[TriggerSpec], *, stub_fires: bool = False) -> tuple[Guard, FakeStore]:
    """A guard watching ``specs`` at ``NOW_NS``; ``stub_fires``: fires are decided but nothing is recorded."""
    store = FakeStore()
    guard = Guard(Stores(triggers=store, exits=None),  # type: ignore[arg-type]
                  Clients(executor=None, markets=None, outbox=_Kick(), watch=_Kick()),  # type: ignore[arg-type]
                  clock_ns=lambda: NOW_NS)
    guard.engine = load(specs)
    if stub_fires:
        async def no_fire(*_a: Any, **_k: Any) -> None:
            return None

        guard.firer.fire = no_fire  # type: ignore[method-assign,assignment]
    return guard, store


def price_tick(bid: str, asset: str, *, age_s: float = 0.0, kind: int = mpb.TICK_KIND_PRICE_CHANGE,
               condition: str = "", winning: str = "") -> mpb.PriceTick:
    """A tick of ``asset``'s best bid received ``age_s`` before ``NOW_NS``."""
    return mpb.PriceTick(asset_id=asset, condition_id=condition, kind=kind, best_bid=bid,  # type: ignore[arg-type]
                         winning_asset_id=winning, received_time_ns=NOW_NS - int(age_s * 1e9))
