"""Performance rules (pure): a subscription's PnL from its fills and marks, and the loss-stop /
profit-scale decisions it calls for.

PnL uses average cost per asset: a BUY adds its notional to the cost and its shares net of the fee
shares the venue kept (as executor/domain/position_math.apply_fill), a SELL realizes its proceeds minus the average
cost of the shares sold. Unrealized PnL is shares held x mark - cost. The rules count the fills of the
subscription's current mode's venue only (:func:`venue_of`): paper profit never offsets a live loss.

Marks the rules can trust are those of fresh books (``BookSnapshot.fresh``). With any held asset unmarked or
its book not fresh the PnL is incomplete (:attr:`Pnl.complete` false) and valued so that no untrusted mark adds
a gain: an unmarked asset counts at cost, one with a stale book at the lower of its cost and its stale mark.
A loss-stop still pauses on that PnL (a pause is undone by a resume, a loss not stopped is not), but a
profit-scale waits for complete marks.

Also the rows the rules are evaluated from and recorded as (:class:`SubscriptionRules`, :class:`StatsRow`,
:class:`DecisionRow`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from common.decimals import ONE, ZERO, fmt, parse_decimal
from common.ids import hash_id

VENUE_OF_MODE = {"PAPER": "PAPER", "LIVE": "INSIDERS"}  # a subscription's execution mode → its fills' venue


def venue_of(mode: str) -> str:
    """The venue of the fills a subscription in ``mode`` (``PAPER`` / ``LIVE``) makes."""
    return VENUE_OF_MODE.get(mode, mode)


class Action(StrEnum):
    """A performance action applied through control."""

    PAUSE = "PAUSE"
    SCALE = "SCALE"


@dataclass(frozen=True, slots=True)
class FillRow:
    """One fill of a subscription's order; ``size`` is the gross size filled."""

    asset_id: str
    side: str  # "BUY" | "SELL"
    size: Decimal
    price: Decimal
    notional_usd: Decimal
    fee_shares: Decimal = ZERO  # of a BUY: shares the venue kept as its fee
    venue: str = "PAPER"  # INSIDERS (live) or PAPER


@dataclass(frozen=True, slots=True)
class Pnl:
    """Realized + unrealized PnL of one subscription, USD."""

    realized: Decimal
    unrealized: Decimal
    held: Mapping[str, tuple[Decimal, Decimal]]  # asset -> (shares, cost)
    unmarked: tuple[str, ...] = ()  # held assets without a mark (counted at cost)
    stale: tuple[str, ...] = ()  # held assets whose book is not fresh (no gain counted)

    @property
    def total(self) -> Decimal:
        """Realized plus unrealized."""
        return self.realized + self.unrealized

    @property
    def complete(self) -> bool:
        """True when every held asset is valued at the mark of a fresh book."""
        return not self.unmarked and not self.stale

    def gaps(self) -> str:
        """How many held assets are untrusted, for reasons (the log names them)."""
        return f"{len(self.unmarked)} unmarked, {len(self.stale)} stale"


@dataclass(frozen=True, slots=True)
class Holdings:
    """What a subscription's fills add up to: realized PnL and the open (shares, cost) per asset."""

    realized: Decimal
    held: Mapping[str, tuple[Decimal, Decimal]]  # asset -> (shares, cost), open positions only


@dataclass(frozen=True, slots=True)
class Ledger:
    """The running average-cost sums of a subscription's fills: realized PnL and (shares, cost) of every
    asset with shares held, so that folding more fills later equals folding them all at once.
    A closed asset (selling all its shares takes all its cost) is dropped: folding it again starts from
    (0, 0) either way, and the ledger stays the size of the open book rather than of every asset ever
    traded (a copy of a five-minute-market trader closes hundreds a day)."""

    realized: Decimal
    assets: Mapping[str, tuple[Decimal, Decimal]]


def fold(fills: Iterable[FillRow], start: Ledger | None = None) -> Ledger:
    """``start`` (nothing when None) followed by ``fills`` in order, average cost per asset.

    A BUY adds ``size - fee_shares`` shares at the cost of its whole notional: a fee beyond its size (one larger
    than its fill, or booked alone: size 0, no USD) takes shares already held, the cost staying; one whose fee took
    every share held is a realized loss of what they cost.
    """
    held: dict[str, tuple[Decimal, Decimal]] = dict(start.assets) if start is not None else {}
    realized = start.realized if start is not None else ZERO
    for f in fills:
        shares, cost = held.get(f.asset_id, (ZERO, ZERO))
        notional = f.notional_usd if f.notional_usd > 0 else f.size * f.price
        if f.side == "BUY":
            net = f.size - max(ZERO, f.fee_shares)
            if shares + net > 0:
                held[f.asset_id] = (shares + net, cost + notional)
            else:
                held.pop(f.asset_id, None)
                realized -= cost + notional
            continue
        sold = min(f.size, shares)
        if sold <= 0:
            continue
        cost_out = cost if sold == shares else cost * sold / shares
        realized += notional * sold / f.size - cost_out
        if sold == shares:
            del held[f.asset_id]
        else:
            held[f.asset_id] = (shares - sold, cost - cost_out)
    return Ledger(realized, held)


def fold_by_venue(fills: Iterable[FillRow], start: Mapping[str, Ledger] | None = None) -> dict[str, Ledger]:
    """:func:`fold` of each venue's fills apart (venue → its ledger), from ``start``."""
    by_venue: dict[str, list[FillRow]] = {}
    for f in fills:
        by_venue.setdefault(f.venue, []).append(f)
    out = dict(start or {})
    for venue, part in by_venue.items():
        out[venue] = fold(part, out.get(venue))
    return out


def all_venues(ledgers: Mapping[str, Ledger]) -> Holdings:
    """The holdings of every venue together (``stats.unrealizedPnlUsd`` shows them all)."""
    held: dict[str, tuple[Decimal, Decimal]] = {}
    for ledger in ledgers.values():
        for asset, (shares, cost) in ledger.assets.items():
            if shares > 0:
                was = held.get(asset, (ZERO, ZERO))
                held[asset] = (was[0] + shares, was[1] + cost)
    return Holdings(sum((ledger.realized for ledger in ledgers.values()), ZERO), held)


def open_holdings(ledger: Ledger) -> Holdings:
    """The ledger's realized PnL and its open positions."""
    return Holdings(ledger.realized, {a: v for a, v in ledger.assets.items() if v[0] > 0})


def holdings(fills: Iterable[FillRow]) -> Holdings:
    """Replay fills in time order, average cost per asset."""
    return open_holdings(fold(fills))


def valued(book: Holdings, marks: Mapping[str, Decimal], fresh: Collection[str] | None = None) -> Pnl:
    """PnL of ``book`` with its open shares valued at ``marks``; with ``fresh`` (the assets whose book is
    fresh), a held asset marked but not in it is stale and counts at most at cost (see the module doc)."""
    unrealized = ZERO
    unmarked, stale = [], []
    for asset, (shares, cost) in sorted(book.held.items()):
        mark = marks.get(asset)
        if mark is None:
            unmarked.append(asset)
            continue
        value = shares * mark - cost
        if fresh is not None and asset not in fresh:
            stale.append(asset)
            value = min(ZERO, value)
        unrealized += value
    return Pnl(book.realized, unrealized, book.held, tuple(unmarked), tuple(stale))


USD_PLACES = Decimal("0.000001")  # USDC's base unit


def unrealized_usd(book: Holdings | None, marks: Mapping[str, Decimal]) -> Decimal:
    """What ``stats.unrealizedPnlUsd`` shows: the open shares of ``book`` at ``marks`` less their cost, to
    USDC's base unit (an asset without a mark counts at cost; no book is 0)."""
    if book is None:
        return ZERO
    return valued(book, marks).unrealized.quantize(USD_PLACES)


def pnl(fills: Iterable[FillRow], marks: Mapping[str, Decimal]) -> Pnl:
    """PnL of fills in time order, with open shares valued at ``marks``."""
    return valued(holdings(fills), marks)


@dataclass(frozen=True, slots=True)
class PerfRules:
    """A subscription's ``perf`` ("0" = off)."""

    loss_stop_usd: Decimal = ZERO
    profit_scale_at_usd: Decimal = ZERO
    profit_scale_multiplier: Decimal = ONE

    @property
    def active(self) -> bool:
        """True when any rule is on."""
        return self.loss_stop_usd > 0 or self.profit_scale_at_usd > 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PerfRules:
        """From the proto3 JSON of ``Perf`` (as control stores it); raises ValueError on bad decimals."""
        def dec(name: str, default: Decimal) -> Decimal:
            raw = data.get(name)
            return parse_decimal(raw) if raw not in (None, "") else default

        return cls(dec("lossStopUsd", ZERO), dec("profitScaleAtUsd", ZERO), dec("profitScaleMultiplier", ONE))


@dataclass(frozen=True, slots=True)
class Basis:
    """What a decision is made under: the subscription's execution mode and rules. Sent with the decision;
    control refuses it when they are no longer the subscription's."""

    mode: str  # PAPER | LIVE
    rules: PerfRules

    def to_json(self) -> dict[str, str]:
        """As ``guard_perf_decisions.decided_under`` keeps it."""
        r = self.rules
        return {"mode": self.mode, "lossStopUsd": fmt(r.loss_stop_usd), "profitScaleAtUsd": fmt(r.profit_scale_at_usd),
                "profitScaleMultiplier": fmt(r.profit_scale_multiplier)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Basis | None:
        """From :meth:`to_json` (None for a row recorded before bases were)."""
        return cls(str(data.get("mode") or ""), PerfRules.from_json(data)) if data else None


@dataclass(frozen=True, slots=True)
class Decision:
    """A performance action to apply, with the numbers behind it."""

    decision_id: str
    subscription_id: str
    action: Action
    multiplier: Decimal | None
    pnl: Pnl
    threshold_usd: Decimal
    reason: str
    basis: Basis | None = None


def loss_stop_id(subscription_id: str, pauses_before: int) -> str:
    """Decision id of the loss-stop that follows ``pauses_before`` earlier ones."""
    return hash_id("perf", subscription_id, "PAUSE", str(pauses_before + 1))


def resumed_id(subscription_id: str, pauses_before: int) -> str:
    """Id of the record that the subscription was resumed after its ``pauses_before``-th loss-stop decision."""
    return hash_id("perf", subscription_id, "RESUMED", str(pauses_before))


def profit_scale_id(subscription_id: str, threshold: Decimal, multiplier: Decimal, scales_before: int = 0) -> str:
    """Decision id of the profit-scale to ``multiplier`` that follows ``scales_before`` earlier ones."""
    parts = [fmt(threshold), fmt(multiplier)] + ([str(scales_before + 1)] if scales_before else [])
    return hash_id("perf", subscription_id, "SCALE", *parts)


def decide(subscription_id: str, rules: PerfRules, result: Pnl, *, pauses_before: int,
           scaled_ids: frozenset[str], scaled_to: Decimal | None = None,
           resumed_at_pnl: Decimal | None = None, basis: Basis | None = None) -> Decision | None:
    """The action an ACTIVE subscription's PnL calls for, or None.

    Loss-stop when PnL <= -loss_stop_usd; after a loss-stop was resumed, when PnL <= ``resumed_at_pnl`` (the
    PnL when it was found resumed) - loss_stop_usd: the user accepted the loss so far, and each pause after a
    resume is a new decision, so a resume is never undone at once by the loss it was made with. Otherwise,
    with complete marks only, profit-scale when PnL >= profit_scale_at_usd and the multiplier control applies
    now (``scaled_to``, the subscription's appliedMultiplier; None: 1) is not the rule's. Control sets the
    multiplier (it does not compound it) and puts it back to 1 when the rule or the mode changes, so the
    sizing follows each change once.
    """
    total = result.total
    numbers = f"pnl {fmt(total)} (realized {fmt(result.realized)}, unrealized {fmt(result.unrealized)})"
    if not result.complete:
        numbers += f" [marks incomplete: {result.gaps()}]"
    floor = -rules.loss_stop_usd if resumed_at_pnl is None else resumed_at_pnl - rules.loss_stop_usd
    if rules.loss_stop_usd > 0 and total <= floor:
        since = ("" if resumed_at_pnl is None
                 else f" (pnl {fmt(resumed_at_pnl)} when resumed - {fmt(rules.loss_stop_usd)})")
        return Decision(loss_stop_id(subscription_id, pauses_before), subscription_id, Action.PAUSE, None,
                        result, rules.loss_stop_usd, f"LOSS_STOP: {numbers} <= {fmt(floor)}{since}", basis)
    if scale_due(rules, result, scaled_to):
        if not result.complete:
            return None
        did = profit_scale_id(subscription_id, rules.profit_scale_at_usd, rules.profit_scale_multiplier,
                              len(scaled_ids))
        if did in scaled_ids:
            return None
        return Decision(did, subscription_id, Action.SCALE, rules.profit_scale_multiplier, result,
                        rules.profit_scale_at_usd,
                        f"PROFIT_SCALE: {numbers} >= {fmt(rules.profit_scale_at_usd)},"
                        f" x{fmt(rules.profit_scale_multiplier)}", basis)
    return None


def scale_due(rules: PerfRules, result: Pnl, scaled_to: Decimal | None) -> bool:
    """True when the PnL calls for the profit-scale (marks aside): PnL >= the threshold and the multiplier
    applied now (None: 1) is not the rule's."""
    return (rules.profit_scale_at_usd > 0 and result.total >= rules.profit_scale_at_usd
            and rules.profit_scale_multiplier > 0 and (scaled_to or ONE) != rules.profit_scale_multiplier)


@dataclass(frozen=True, slots=True)
class SubscriptionRules:
    """An ACTIVE subscription, the proto3 JSON of its ``perf`` and the version of its fills (None without a
    stats row: no fill booked by the executor)."""

    id: str
    perf: dict[str, Any]
    fills_version: int | None = None
    mode: str = "PAPER"  # PAPER | LIVE
    applied_multiplier: Decimal = ONE  # what control applies to its sizing now


@dataclass(frozen=True, slots=True)
class StatsRow:
    """A subscription with booked fills: the version of its fills and the unrealized PnL its stats show."""

    id: str
    fills_version: int
    unrealized_pnl_usd: Decimal


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A decision recorded before."""

    decision_id: str
    subscription_id: str
    action: str
    multiplier: Any
    reason: str
    applied_at: Any
    pnl_usd: Any = None
    error: str = ""  # why control refused it ("" when applied)
    decided_under: Any = None  # Basis.to_json() (None: recorded before bases were)

    @property
    def basis(self) -> Basis | None:
        """The rules it was made under (None when not recorded)."""
        return Basis.from_json(self.decided_under)
