"""How many shares a fired trigger sells (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from common.decimals import ZERO
from services.guard.domain.trigger_model import Reason

SHARE_QUANTUM = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class SellSize:
    """The decided SELL: ``size`` 0 means nothing is sent, ``reason`` says why (or how it was sized)."""

    size: Decimal
    reason: Reason
    available: Decimal

    @property
    def sendable(self) -> bool:
        """True when a SELL should be sent."""
        return self.size > 0


def sell_size(*, size: Decimal, sell_fraction: Decimal, held: Decimal, in_flight: Decimal,
              min_order_size: Decimal, quantum: Decimal = SHARE_QUANTUM) -> SellSize:
    """Shares to sell: ``size``, or ``sell_fraction`` of what is held net of SELLs in flight.

    Never more than available. A remainder that would be left below the market minimum is sold
    with it (``REMAINDER_BELOW_MIN_SOLD_WHOLE``); a SELL that would itself be below the minimum, or below
    one ``quantum`` (the executor's share step, the minimum when the market's is not known), is not sent
    (``SIZE_BELOW_MIN_ORDER``): the executor would refuse it; nothing available means ``NO_POSITION``.
    Fractions are rounded down to ``quantum`` shares; the whole position is sold exactly as held.
    """
    available = max(held - in_flight, ZERO)
    if available <= 0:
        return SellSize(ZERO, Reason.NO_POSITION, available)
    reason = Reason.PRICE_CROSSED
    if size > 0:
        want = size
    else:
        want = (sell_fraction * available).quantize(quantum, rounding=ROUND_DOWN) if sell_fraction < 1 \
            else available
    if want >= available:
        if want > available:
            reason = Reason.SIZE_CAPPED_TO_POSITION
        want = available
    elif available - want < min_order_size:
        want, reason = available, Reason.REMAINDER_BELOW_MIN_SOLD_WHOLE
    if want <= 0 or want < max(min_order_size, quantum):
        return SellSize(ZERO, Reason.SIZE_BELOW_MIN_ORDER, available)
    return SellSize(want, reason, available)
