"""A subscription's automatic exits turned into triggers for one copied position (pure).

The exits of a position form one OCO group priced from the position's average entry price:
take-profit and stop-loss sell everything (closing), the trailing stop tracks its mark from the
entry price, each ladder rung sells its fraction of what is left (a rung of 1 is closing).

Also what a copy fill reports (:class:`CopyFill`) and what it did to a position's exits (:class:`ExitsChange`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from common.decimals import ONE, ZERO, fmt, parse_decimal
from common.ids import hash_id
from services.guard.domain.trigger_model import Kind
from services.guard.domain.trigger_rows import TriggerRow

_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class ExitsConfig:
    """The ``exits`` of a subscription ("0" = none)."""

    take_profit_pct: Decimal = ZERO
    stop_loss_pct: Decimal = ZERO
    trailing_stop_pct: Decimal = ZERO
    ladder: tuple[tuple[Decimal, Decimal], ...] = ()  # (gain pct, sell fraction)

    @property
    def empty(self) -> bool:
        """True when no exit is configured."""
        return not (self.take_profit_pct or self.stop_loss_pct or self.trailing_stop_pct or self.ladder)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExitsConfig:
        """From the proto3 JSON of ``Exits`` (as control stores it); raises ValueError on bad decimals."""
        def dec(name: str) -> Decimal:
            raw = data.get(name)
            return parse_decimal(raw) if raw not in (None, "") else ZERO

        ladder = tuple((parse_decimal(step.get("gainPct") or "0"), parse_decimal(step.get("sellFraction") or "0"))
                       for step in data.get("ladder") or [])
        return cls(dec("takeProfitPct"), dec("stopLossPct"), dec("trailingStopPct"), ladder)


@dataclass(frozen=True, slots=True)
class PlannedExit:
    """One trigger to create for the position."""

    id: str
    name: str
    kind: Kind
    trigger_price: Decimal = ZERO
    trail_pct: Decimal = ZERO
    high_water_mark: Decimal = ZERO
    sell_fraction: Decimal = ONE


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """The triggers to create, and the exits left out with their reasons."""

    oco_group: str
    exits: tuple[PlannedExit, ...]
    skipped: tuple[tuple[str, str], ...]


def group_id(follower_wallet_id: str, asset_id: str, opening_order_id: str) -> str:
    """The OCO group of one opening of a position."""
    return hash_id("grp", follower_wallet_id, asset_id, opening_order_id)


def renewal_id(oco_group: str) -> str:
    """The OCO group that renews ``oco_group`` (its exits used up while shares remain): one per group, whatever
    event renews it, so a replayed event finds it registered."""
    return hash_id("grp", oco_group, "renewed")


def exit_id(oco_group: str, name: str) -> str:
    """The trigger id of the exit ``name`` of a group."""
    return hash_id("trg", oco_group, name)


def without(plan_: ExitPlan, names: frozenset[str], reason: str) -> ExitPlan:
    """``plan_`` less the exits ``names``, which are listed as skipped for ``reason``."""
    if not names:
        return plan_
    return ExitPlan(plan_.oco_group, tuple(e for e in plan_.exits if e.name not in names),
                    plan_.skipped + tuple((e.name, reason) for e in plan_.exits if e.name in names))


def plan(config: ExitsConfig, *, oco_group: str, entry_price: Decimal, tick_size: Decimal) -> ExitPlan:
    """The exits of a position opened at ``entry_price``.

    Take-profit prices are rounded up and stop-loss prices down to the tick, which fires on the
    same tick-grid prices as the exact value. An exit whose price falls outside (0, 1) cannot fire
    and is skipped with a reason instead of created.
    """
    tick = tick_size if tick_size > 0 else Decimal("0.0001")
    exits: list[PlannedExit] = []
    skipped: list[tuple[str, str]] = []

    def take_profit(name: str, gain: Decimal, fraction: Decimal) -> None:
        if not ZERO < fraction <= ONE:
            skipped.append((name, "SELL_FRACTION_OUT_OF_RANGE"))
            return
        if gain <= 0:
            skipped.append((name, "GAIN_NOT_POSITIVE"))
            return
        price = (entry_price * (1 + gain / _HUNDRED) / tick).to_integral_value(ROUND_CEILING) * tick
        if price >= ONE:
            skipped.append((name, "PRICE_ABOVE_MAX"))
        else:
            exits.append(PlannedExit(exit_id(oco_group, name), name, Kind.TAKE_PROFIT,
                                     trigger_price=_canon(price), sell_fraction=fraction))

    if entry_price <= 0 or entry_price >= ONE:
        return ExitPlan(oco_group, (), (("all", "ENTRY_PRICE_OUT_OF_RANGE"),))
    if config.take_profit_pct > 0:
        take_profit("take_profit", config.take_profit_pct, ONE)
    if config.stop_loss_pct > 0:
        price = (entry_price * (1 - config.stop_loss_pct / _HUNDRED) / tick).to_integral_value(ROUND_FLOOR) * tick
        if price <= 0:
            skipped.append(("stop_loss", "PRICE_BELOW_MIN"))
        else:
            exits.append(PlannedExit(exit_id(oco_group, "stop_loss"), "stop_loss", Kind.STOP_LOSS,
                                     trigger_price=_canon(price)))
    if config.trailing_stop_pct > 0:
        if config.trailing_stop_pct >= _HUNDRED:
            skipped.append(("trailing_stop", "TRAIL_OUT_OF_RANGE"))
        else:
            # No mark and no activation price: the mark starts at the first price the stop watches (the best
            # bid). Seeded with the entry (an ask-side price), a spread wider than the trail fired it at once.
            exits.append(PlannedExit(exit_id(oco_group, "trailing_stop"), "trailing_stop",
                                     Kind.TRAILING_STOP, trail_pct=config.trailing_stop_pct))
    for i, (gain, fraction) in enumerate(config.ladder):
        take_profit(f"ladder_{i}", gain, fraction)
    return ExitPlan(oco_group, tuple(exits), tuple(skipped))


def resized(size: Decimal, old_position: Decimal, new_position: Decimal) -> Decimal:
    """A size-based exit scaled with its position (sell-fraction exits need no resize)."""
    if size <= 0 or old_position <= 0:
        return size
    return size * new_position / old_position


def _canon(value: Decimal) -> Decimal:
    return Decimal(fmt(value))


@dataclass(frozen=True, slots=True)
class CopyFill:
    """A copy BUY's fill as the order event reports it."""

    follower_wallet_id: str
    wallet: str
    asset_id: str
    subscription_id: str
    client_order_id: str
    filled_size: Decimal
    avg_price: Decimal


@dataclass(frozen=True, slots=True)
class ExitsChange:
    """What a fill did to a position's exits: ``created`` / ``updated`` / ``cancelled`` rows, and why."""

    outcome: str  # CREATED | RESIZED | POSITION_CLOSED | NO_POSITION | NO_SUBSCRIPTION | ALREADY_REGISTERED | OPEN
    # | EXITS_USED (a SELL left shares that no exit guards: renew_used is next)
    created: tuple[TriggerRow, ...] = ()
    updated: tuple[TriggerRow, ...] = ()
    cancelled: tuple[TriggerRow, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    # the ARMED exits of the position's open group as the change left them (made by an earlier event, maybe by
    # another guard whose notice never came: it died first): the caller watches those it does not
    armed: tuple[str, ...] = ()
