"""BUY sizing: the raw USD amount from the subscription's mode, × the perf multiplier, clamped to
[minOrderUsd, maxOrderUsd]. The operator ceiling, risk headroom and market minimums are applied afterwards
(``decide``); the market minimum net of the taker fee, which the venue takes in shares of a BUY, is
:func:`net_buy_minimum` (a copy below it is skipped, as one below the fee-blind minimum: :func:`below_net_minimum`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from functools import lru_cache

from common.decimals import MAX_USD, fmt
from common.takerfee import TakerFee
from services.router.domain.market_rules import buy_minimum_usd
from services.router.domain.model import (
    CENT,
    ONE,
    SHARE_QUANTUM,
    ZERO,
    LeaderTrade,
    Reason,
    SizingMode,
    SizingRules,
)

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


_BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True)
class NetMinimum:
    """The smallest BUY that holds ``min_order_size`` shares once the taker fee is taken: ``usd`` buys ``shares``
    (gross, on the share grid) at ``price`` (the worst the copy may pay), of which the venue keeps ``fee_shares``."""

    usd: Decimal
    shares: Decimal
    fee_shares: Decimal
    price: Decimal
    min_order_size: Decimal


def gross_for_net(minimum: Decimal, price: Decimal, fee: TakerFee | None) -> Decimal | None:
    """The fewest shares on the share grid a taker BUY at ``price`` (in (0, 1]) must buy to hold ``minimum`` once the
    venue took its fee in shares; None when no size does (the fee takes every share)."""
    first = minimum.quantize(SHARE_QUANTUM, rounding=ROUND_CEILING)
    if fee is None or fee.rate == 0:
        return first
    per_share = fee.usd(ONE, price) / price
    if per_share >= ONE:
        return None

    def holds(gross: Decimal) -> bool:
        return gross - fee.shares(gross, price) >= minimum

    gross = max(first, (minimum / (ONE - per_share)).quantize(SHARE_QUANTUM, rounding=ROUND_CEILING))
    for _ in range(100):  # the fee is rounded up to the token unit: a step more at most, in practice
        if holds(gross):
            break
        gross += SHARE_QUANTUM
    else:
        return None
    while gross - SHARE_QUANTUM >= first and holds(gross - SHARE_QUANTUM):
        gross -= SHARE_QUANTUM
    return gross


@lru_cache(maxsize=4096)
def net_buy_minimum(price: Decimal, min_order_size: Decimal, marketable_min_usd: Decimal, slippage_bps: int,
                    fee: TakerFee | None, tick: Decimal = CENT) -> NetMinimum | None:
    """The smallest BUY worth sending at ``price`` once the taker fee is counted (the fee-blind one:
    :func:`~services.router.domain.market_rules.buy_minimum_usd`). The shares are counted at the worst price the
    copy may pay (``price`` moved by the slippage tolerance, at most 1): the venue sizes a USD BUY at its limit, so
    that is the fewest shares the amount buys, and the fewest net of the fee (a better fill buys more shares than its
    larger fee per share takes). The USD is rounded up to the cent, the shares up to the share grid. No fee known, no
    minimum known, or no usable price: the fee-blind minimum. None: no size holds the minimum. The executor's limit
    never passes 1 − ``tick`` (where the fee is not 0), nor is the worst price counted past it, and is on the tick
    grid, snapped down (a lower price takes more fee a share), as the worst price counted is."""
    today = buy_minimum_usd(price, min_order_size, marketable_min_usd, slippage_bps)
    worst = min(price * (ONE + Decimal(max(0, slippage_bps)) / _BPS), ONE - tick if ZERO < tick < ONE else ONE)
    if ZERO < tick < ONE and worst >= tick:  # the executor's limit is on the grid, snapped down: more fee a share
        worst = (worst / tick).to_integral_value(rounding=ROUND_DOWN) * tick
    if fee is None or fee.rate == 0 or min_order_size <= 0 or worst <= 0:
        return NetMinimum(today, max(min_order_size, ZERO), ZERO, worst, min_order_size)
    gross = gross_for_net(min_order_size, worst, fee)
    if gross is None:
        return None
    usd = max((gross * worst).quantize(CENT, rounding=ROUND_CEILING), marketable_min_usd, today)
    return NetMinimum(usd, gross, fee.shares(gross, worst), worst, min_order_size)


def below_net_minimum(amount: Decimal, minimum: NetMinimum | None) -> Rejection | None:
    """Why ``amount`` (USD, already at least the fee-blind minimum) is not sent: it holds fewer shares than the
    market minimum once the taker fee is taken (BELOW_MARKET_MINIMUM, and so when no size holds it: ``minimum``
    None); None when it holds enough."""
    if minimum is None:
        return Reason.BELOW_MARKET_MINIMUM, "the taker fee takes every share bought: no size holds the market minimum"
    if amount >= minimum.usd:
        return None
    price = minimum.price
    shares = (amount / price).quantize(SHARE_QUANTUM, rounding=ROUND_DOWN) if price > 0 else ZERO
    return (Reason.BELOW_MARKET_MINIMUM,
            f"${fmt(amount)} buys {fmt(shares)} shares at {fmt(price)}, fewer than the market minimum "
            f"{fmt(minimum.min_order_size)} once the taker fee is taken: ${fmt(minimum.usd)} "
            f"({fmt(minimum.shares)} shares, fee {fmt(minimum.fee_shares)}) holds it")
