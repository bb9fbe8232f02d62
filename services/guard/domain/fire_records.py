"""What a fire reads, decides and records (pure data passed between the firer and the trigger store)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.decimals import ZERO
from services.guard.domain.trigger_model import State
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
