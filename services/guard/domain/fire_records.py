"""What a fire reads, decides and records (pure data passed between the firer and the trigger store)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from common.decimals import ZERO
from services.guard.domain.lost_refires import LostSell
from services.guard.domain.trigger_model import State, is_closing
from services.guard.domain.trigger_rows import TriggerRow


@dataclass(frozen=True, slots=True)
class FireFacts:
    """What PostgreSQL says about the trigger's position when it fires (read under the position lock)."""

    held: Decimal
    in_flight: Decimal
    condition_id: str
    follower_user_id: str
    mode_paper: bool
    resolved: bool = False  # the position's market resolved: nothing is left to sell
    lost: Mapping[str, LostSell] = field(default_factory=dict)  # by client order id: the fire's own, ended LOST


@dataclass(frozen=True, slots=True)
class FireDecision:
    """What to record for a fire: FIRED with an order, CANCELLED / FAILED with a reason, or ARMED (deferred:
    nothing recorded, evaluate again once the SELLs in flight on the position have settled)."""

    state: State
    reason: str
    size: Decimal = ZERO
    held: Decimal = ZERO
    order_id: str = ""
    order: bytes | None = None


@dataclass(frozen=True, slots=True)
class FireResult:
    """The trigger after the fire transaction (None when it was no longer ARMED) and the siblings cancelled."""

    row: TriggerRow | None
    decision: FireDecision | None
    cancelled: tuple[TriggerRow, ...]
    current_state: State | None


def oco_siblings(fired: TriggerRow, locked: Iterable[TriggerRow], passed: Collection[str]) -> list[str]:
    """Ids of the triggers a fire that sends a SELL cancels, among those locked with it (in id order): the siblings
    the engine passed, and when the fired trigger closes its position's exits, every member of its OCO group on
    its position, known to the engine or not."""
    group = fired.spec().oco_key if fired.oco_group and is_closing(fired.size, fired.sell_fraction) else None
    return sorted(r.id for r in locked if r.id != fired.id and (r.id in passed or r.spec().oco_key == group))
