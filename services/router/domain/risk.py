"""Risk caps on copied BUYs, from the follower wallet's real positions and fills plus in-flight
reservations (USD of BUY copies emitted but not yet terminal at the executor, and what its manual BUYs not yet
terminal may still spend: ``read_model.follower_state``).

- daily loss limit: once the wallet's realized PnL of the current UTC day went down to −limit, new BUYs stop until
  the day ends (``realized_pnl_today_usd`` is the lowest point the day reached: a later gain does not lift it).
- max open positions: a BUY into a market the wallet neither holds nor has a BUY in flight for
  needs a free slot; open = markets held ∪ markets with reserved USD.
- per-market and total exposure (USD at cost + reserved): the amount is cut to the headroom;
  no headroom at all is a skip.
SELLs reduce risk and are never capped here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import fmt
from services.router.domain.model import ZERO, FollowerState, Reason, RiskRules

Rejection = tuple[Reason, str]


def daily_loss(risk: RiskRules, state: FollowerState) -> Rejection | None:
    """Skip when today's realized loss has reached the limit at any point of the day."""
    limit = risk.daily_loss_limit_usd
    if limit is not None and -state.realized_pnl_today_usd >= limit:
        return (Reason.DAILY_LOSS_LIMIT,
                f"realized PnL today went down to ${fmt(state.realized_pnl_today_usd)}, reaching the daily loss "
                f"limit ${fmt(limit)}: no BUYs until the UTC day ends")
    return None


def open_positions(risk: RiskRules, state: FollowerState, condition_id: str) -> Rejection | None:
    """Skip a BUY that would open a position beyond the cap."""
    cap = risk.max_open_positions
    if cap is None:
        return None
    if condition_id in state.open_markets or condition_id in state.reserved_markets:
        return None
    open_now = len(state.open_markets | state.reserved_markets)
    if open_now >= cap:
        return (Reason.MAX_OPEN_POSITIONS,
                f"{open_now} open positions (incl. in-flight buys) >= maxOpenPositions {cap}")
    return None


@dataclass(frozen=True, slots=True)
class Capped:
    """The amount after exposure caps; ``cut_by`` names the cap that reduced it, if any."""

    amount: Decimal
    cut_by: Reason | None = None
    explain: Callable[[], str] | None = None

    @property
    def detail(self) -> str:
        """Why the amount was cut, with the numbers ("" when it was not)."""
        return self.explain() if self.explain is not None else ""


def _exposure_detail(kind: str, exposure: Decimal, reserved: Decimal, cap_name: str, cap: Decimal) -> str:
    return f"{kind} exposure ${fmt(exposure)} + in-flight ${fmt(reserved)} vs {cap_name} ${fmt(cap)}"


def _cut_detail(kind: str, exposure: Decimal, reserved: Decimal, cap_name: str, cap: Decimal, amount: Decimal,
                headroom: Decimal) -> Callable[[], str]:
    return lambda: (_exposure_detail(kind, exposure, reserved, cap_name, cap)
                    + f": cut ${fmt(amount)} to ${fmt(headroom)}")


def cap_exposure(risk: RiskRules, state: FollowerState, amount: Decimal) -> Capped | Rejection:
    """Cut ``amount`` to the market and total exposure headroom; skip when there is none."""
    capped = Capped(amount)
    market_cap, total_cap = risk.max_market_exposure_usd, risk.max_total_exposure_usd
    if market_cap is None and total_cap is None:
        return capped
    checks = (
        (market_cap, state.market_exposure_usd, state.reserved_market_usd,
         Reason.MARKET_EXPOSURE_LIMIT, "market", "maxMarketExposureUsd"),
        (total_cap, state.total_exposure_usd, state.reserved_total_usd,
         Reason.TOTAL_EXPOSURE_LIMIT, "total", "maxTotalExposureUsd"),
    )
    for cap, exposure, reserved, reason, kind, cap_name in checks:
        if cap is None:
            continue
        headroom = cap - exposure - reserved
        if headroom <= ZERO:
            return reason, _exposure_detail(kind, exposure, reserved, cap_name, cap) + ": no headroom"
        if headroom < capped.amount:
            capped = Capped(headroom, reason, _cut_detail(kind, exposure, reserved, cap_name, cap, amount, headroom))
    return capped
