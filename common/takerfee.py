"""A market's taker fee (pure): what the venue keeps of a taker fill, and how it is read from a market answer.

The venue's taker fee in USD is ``shares × rate × (p·(1 − p))^exponent`` at fill price ``p`` (verified on live fills);
on a BUY it is taken in shares: ``fee_usd / p`` of the shares bought. A CLOB ``GET /markets/{condition_id}`` answer
names ``taker_base_fee`` (bps: the most the venue charges, 1000 in every fee-paying market seen, whose schedules
charge less: rate 0.05 or 0.07 at exponent 1, 0.25 at exponent 2); a schedule (Gamma's ``feeSchedule``, the market
channel's ``fee_schedule``) names the rate and exponent themselves. :func:`parse_taker_fee` takes the schedule when
the answer has one, else the base fee as the rate at exponent 1 (never less than those schedules charge).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal, localcontext
from typing import Any

from common.decimals import fmt, parse_decimal

_ZERO = Decimal(0)
_ONE = Decimal(1)
_BPS = Decimal(10_000)
MAX_EXPONENT = Decimal(10)
FEE_SHARE_QUANTUM = Decimal("0.000001")  # the venue's token unit (6 decimals): a fee is rounded up to it
_CONTEXT = Context(prec=28)  # Decimal ** Decimal is rounded to the context: one fixed, whatever the thread's is
RATE_FIELD = "taker_fee_rate"  # tt:market:{asset} fields (common.marketstate)
EXPONENT_FIELD = "taker_fee_exponent"


@dataclass(frozen=True, slots=True)
class TakerFee:
    """A market's taker fee schedule: ``rate`` in [0, 1), ``exponent`` in [0, 10]."""

    rate: Decimal
    exponent: Decimal

    def usd(self, shares: Decimal, price: Decimal) -> Decimal:
        """The fee in USD of a taker fill of ``shares`` at ``price`` (in (0, 1]; ValueError otherwise)."""
        if not _ZERO < price <= _ONE:
            raise ValueError(f"price {price} outside (0, 1]")
        if self.rate == 0 or shares <= 0:
            return _ZERO
        with localcontext(_CONTEXT):
            curve = price * (_ONE - price)
            if self.exponent == 0:
                factor = _ONE
            elif curve == 0:
                factor = _ZERO
            else:
                factor = curve ** self.exponent
            return shares * self.rate * factor

    def shares(self, shares: Decimal, price: Decimal) -> Decimal:
        """The shares the venue keeps of a taker BUY of ``shares`` at ``price``: the USD fee / ``price``, rounded up
        to the token unit (a fee a hair larger than computed must not leave the holding below a minimum)."""
        fee = self.usd(shares, price)
        if fee == 0:
            return _ZERO
        with localcontext(_CONTEXT):
            return (fee / price).quantize(FEE_SHARE_QUANTUM, rounding=ROUND_CEILING)

    def to_fields(self) -> dict[str, str]:
        """The ``tt:market:{asset}`` fields of the fee."""
        return {RATE_FIELD: fmt(self.rate), EXPONENT_FIELD: fmt(self.exponent)}


def checked(rate: Decimal, exponent: Decimal) -> TakerFee:
    """``TakerFee(rate, exponent)``; ValueError when either is outside its range."""
    if not _ZERO <= rate < _ONE:
        raise ValueError(f"fee rate {rate} outside [0, 1)")
    if not _ZERO <= exponent <= MAX_EXPONENT:
        raise ValueError(f"fee exponent {exponent} outside [0, {MAX_EXPONENT}]")
    return TakerFee(rate, exponent)


def from_fields(h: dict[str, str]) -> TakerFee | None:
    """The fee stored in a ``tt:market:{asset}`` hash; None when absent or not understood (no fee known)."""
    rate, exponent = h.get(RATE_FIELD), h.get(EXPONENT_FIELD)
    if not rate or not exponent:
        return None
    try:
        return checked(parse_decimal(rate), parse_decimal(exponent))
    except ValueError:
        return None


def parse_taker_fee(d: dict[str, Any]) -> tuple[TakerFee | None, str]:
    """The taker fee a market answer names, and what in it was unusable ("" when nothing). A fee-disabled market
    (``fees_enabled`` false) has rate 0; else its schedule when usable, else its ``taker_base_fee`` (bps) as the
    rate at exponent 1; None: the answer names no usable fee (no fee known). Never raises."""
    problems: list[str] = []
    enabled = _get(d, "fees_enabled", "feesEnabled")
    if enabled is False:
        return TakerFee(_ZERO, _ONE), ""
    if enabled is not None and enabled is not True:
        problems.append("fees_enabled must be a boolean")
    schedule = _get(d, "fee_schedule", "feeSchedule")
    if schedule is not None:
        try:
            return _schedule(schedule), "; ".join(problems)
        except ValueError as exc:
            problems.append(f"fee_schedule: {exc}")
    base = _get(d, "taker_base_fee", "takerBaseFee")
    fee = None
    if base is not None:
        try:
            fee = _base_fee(base)
        except ValueError as exc:
            problems.append(f"taker_base_fee: {exc}")
    return fee, "; ".join(problems)


def _get(d: dict[str, Any], *keys: str) -> Any:
    return next((d[k] for k in keys if k in d), None)


def _schedule(raw: Any) -> TakerFee:
    if not isinstance(raw, dict):
        raise ValueError("must be an object")
    rate, exponent = raw.get("rate"), raw.get("exponent")
    if rate is None or exponent is None:
        raise ValueError("needs a rate and an exponent")
    return checked(parse_decimal(rate), parse_decimal(exponent))


def _base_fee(raw: Any) -> TakerFee:
    bps = parse_decimal(raw)
    if bps != bps.to_integral_value():
        raise ValueError(f"{raw!r} is not a whole number of bps")
    return checked(bps / _BPS, _ONE)
