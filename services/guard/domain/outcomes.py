"""What a tick brings to the trigger engine and what it did (pure): a tick's prices per source, and the triggers it
fired, cancelled, held or released."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from services.guard.domain.trigger_model import Reason, Source, TriggerSpec


class Prices(NamedTuple):
    """The prices of one tick, per source (None when the tick has no such price)."""

    best_bid: Decimal | None = None
    mid: Decimal | None = None
    last_trade: Decimal | None = None

    def get(self, source: Source) -> Decimal | None:
        """The price a trigger with ``source`` watches."""
        if source is Source.BEST_BID:
            return self.best_bid
        if source is Source.MID:
            return self.mid
        return self.last_trade


@dataclass(frozen=True, slots=True)
class Fired:
    """A trigger crossed on a fresh price: a SELL must be sent."""

    spec: TriggerSpec
    price: Decimal


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A trigger left the engine without firing."""

    spec: TriggerSpec
    reason: Reason
    by: str = ""


@dataclass(frozen=True, slots=True)
class Held:
    """A trigger would have fired, but the price was stale: nothing is sent."""

    spec: TriggerSpec
    price: Decimal


@dataclass(slots=True)
class Outcome:
    """What one tick did."""

    fired: list[Fired] = field(default_factory=list)
    cancelled: list[Cancelled] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    released: list[TriggerSpec] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fired or self.cancelled or self.held or self.released)
