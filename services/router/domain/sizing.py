"""BUY sizing: the raw USD amount from the subscription's mode, × the perf multiplier, clamped to
[minOrderUsd, maxOrderUsd]. The operator ceiling, risk headroom and market minimums are applied afterwards
(``decide``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import MAX_USD, fmt
from services.router.domain.model import ZERO, LeaderTrade, Reason, SizingMode, SizingRules

HUNDRED = Decimal(100)
Rejection = tuple[Reason, str]


@dataclass(frozen=True, slots=True)
class Sized:
    """A USD amount and how it was computed (text built only when a skip needs it)."""

    amount: Decimal
    explain: Callable[[], str]

    @property
    def how(self) -> str:
        """How the amount was computed, with the numbers."""
        return self.explain()


def raw_amount(rules: SizingRules, trade: LeaderTrade, balance_usd: Decimal | None) -> Sized | Rejection:
    """The amount the mode asks for, or (Reason, detail) when it cannot be sized."""
    if rules.mode is SizingMode.FIXED_USD:
        if rules.fixed_usd is None:
            return Reason.INVALID_SUBSCRIPTION, "sizing FIXED_USD without fixedUsd"
        fixed = rules.fixed_usd
        return Sized(fixed, lambda: f"fixedUsd ${fmt(fixed)}")
    if rules.mode is SizingMode.PROPORTIONAL:
        if rules.ratio is None:
            return Reason.INVALID_SUBSCRIPTION, "sizing PROPORTIONAL without ratio"
        ratio = rules.ratio
        return Sized(trade.notional_usd * ratio,
                     lambda: f"leader notional ${fmt(trade.notional_usd)} × ratio {fmt(ratio)}")
    if rules.percent_of_balance is None:
        return Reason.INVALID_SUBSCRIPTION, "sizing PERCENT_OF_BALANCE without percentOfBalance"
    if balance_usd is None:
        return Reason.BALANCE_UNKNOWN, "no funded balance on record and the balance endpoint did not answer"
    pct = rules.percent_of_balance
    return Sized(balance_usd * pct / HUNDRED, lambda: f"balance ${fmt(balance_usd)} × {fmt(pct)}%")


def size_buy(rules: SizingRules, trade: LeaderTrade, balance_usd: Decimal | None,
             multiplier: Decimal, ceiling: Decimal | None = None) -> Sized | Rejection:
    """The USD to spend before risk caps, or a skip reason. Multiplier first, then the clamps; more than
    ``MAX_USD`` is out of range only when still so after maxOrderUsd and the operator ``ceiling`` (which the caller
    applies: ``common.ceiling.cap_buy``)."""
    raw = raw_amount(rules, trade, balance_usd)
    if not isinstance(raw, Sized):
        return raw
    amount = raw.amount
    if multiplier != 1:
        amount *= multiplier

    def how() -> str:
        return raw.how + (f" × multiplier {fmt(multiplier)}" if multiplier != 1 else "")

    if amount <= ZERO:
        return Reason.SIZE_ZERO, f"sized to ${fmt(amount)} ({how()})"
    clamp = ""
    if rules.min_order_usd is not None and amount < rules.min_order_usd:
        amount, clamp = rules.min_order_usd, "raised to minOrderUsd"
    if rules.max_order_usd is not None and amount > rules.max_order_usd:
        amount, clamp = rules.max_order_usd, "cut to maxOrderUsd"
    # past what the reservations can count (and no real order): kept out of the arithmetic that follows
    if amount > MAX_USD and (ceiling is None or ceiling > MAX_USD):
        capped = amount if ceiling is None else min(amount, ceiling)
        cut = f", cut to the operator ceiling ${fmt(ceiling)}" if ceiling is not None and capped < amount else ""
        return Reason.SIZE_OUT_OF_RANGE, f"sized to ${fmt(capped)} ({how()}{cut}) > ${fmt(MAX_USD)}"

    def explain() -> str:
        return how() + (f", {clamp} ${fmt(amount)}" if clamp else "")

    return Sized(amount, explain)
