"""A position's row (``position_repo``) and its mark as a ``Position`` message (pure).

- ``shares``: what the life holds (``size``); once its market resolved, the shares it held then
  (``resolved_shares``: ``size`` drops to 0 at settlement).
- ``costUsd``: what the shares shown cost: once resolved, what the life paid for the shares it held then
  (``resolved_cost_usd``; for a life resolved before that was kept, ``resolved_shares`` x ``avg_price``).
- ``mark`` / ``markTime``: for OPEN positions only, the price guard values open shares at
  (``common.marketstate.mark_price``: mid, else best bid, else last trade) from the book ingest keeps in
  Redis, and the book's last update; "" and absent when there is no book (and for ended positions).
- ``unrealizedPnlUsd``: shares × mark − costUsd for an OPEN position with a mark, to USDC's base unit;
  "0" otherwise (an unmarked position counts at cost, as in guard's PnL).
- ``realizedPnlUsd``: this life's realized PnL (the payout included once resolved).
- ``updateTime``: the last change of any field shown, a reconciliation's count included (``position_repo``).
- ``resolution`` and ``redemption`` are always present (empty values until they apply); the redemption
  is the (follower wallet, market) one, shown on RESOLVED_WON / REDEEMED positions of the Insiders venue.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.decimals import fmt
from services.control.codec import Row, dec, full, short, timestamp_of
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import position_pb2 as ppb

USD_PLACES = Decimal("0.000001")  # USDC's base unit, as guard's stats.unrealizedPnlUsd
RESOLVED = frozenset({"RESOLVED_WON", "RESOLVED_LOST", "REDEEMED"})
Mark = tuple[Decimal, int]  # (price, book updated, ms since the epoch)


def _numbers(enum_type: Any) -> dict[str, int]:
    """Stored name → enum number (``OPEN`` → ``POSITION_STATE_OPEN``'s), for the page's hot loop."""
    return {short(enum_type, n): full(enum_type, short(enum_type, n)) for n in enum_type.values() if n}


_VENUES = _numbers(cpb.Venue)
_ORIGINS = _numbers(ppb.PositionOrigin)
_STATES = _numbers(ppb.PositionState)
_REDEMPTIONS = _numbers(ppb.RedemptionState)


def shares_of(row: Row) -> Decimal:
    """The shares a life shows: held, or held when its market resolved."""
    size: Decimal = row["size"]
    if row["state"] in RESOLVED and row["resolved_shares"] is not None:
        return Decimal(row["resolved_shares"])
    return size


def cost_of(row: Row) -> Decimal:
    """What the shares a life shows cost (:func:`shares_of`)."""
    cost: Decimal = row["cost_usd"]
    if row["state"] in RESOLVED and row["resolved_shares"] is not None:
        if row["resolved_cost_usd"] is not None:
            return Decimal(row["resolved_cost_usd"])
        return (Decimal(row["resolved_shares"]) * Decimal(row["avg_price"])).quantize(USD_PLACES)
    return cost


def unrealized(shares: Decimal, mark: Decimal, cost_usd: Decimal) -> Decimal:
    """shares × mark − cost, to USDC's base unit."""
    return (shares * mark - cost_usd).quantize(USD_PLACES)


def _text(value: Decimal | None) -> str:
    """A nullable numeric column: "" when NULL."""
    return "" if value is None else fmt(Decimal(value))


def position_from_row(row: Row, into: ppb.Position, *, mark: Mark | None, slug: str) -> ppb.Position:
    """Fill ``into`` (e.g. ``response.positions.add()``) from a row, its mark and its market slug."""
    shares = shares_of(row)
    is_open = row["state"] == "OPEN"
    into.id = row["id"]
    into.wallet = row["wallet"]
    into.follower_wallet_id = row["follower_wallet_id"]
    into.subscription_id = row["subscription_id"] or ""
    into.asset_id = row["asset_id"]
    into.condition_id = row["condition_id"] or ""
    into.outcome = row["outcome"] or ""
    into.market_slug = row["market_slug"] or slug
    into.venue = _VENUES[row["venue"]]  # type: ignore[assignment]
    into.origin = _ORIGINS[row["origin"]]  # type: ignore[assignment]
    into.state = _STATES[row["state"]]  # type: ignore[assignment]
    into.shares = dec(shares)
    into.avg_cost = dec(row["avg_price"])
    into.cost_usd = dec(cost_of(row))
    into.unrealized_pnl_usd = "0"
    if is_open and mark is not None:
        price, updated_ms = mark
        into.mark = fmt(price)
        if updated_ms > 0:
            into.mark_time.FromMilliseconds(updated_ms)
        into.unrealized_pnl_usd = dec(unrealized(shares, price, row["cost_usd"]))
    into.realized_pnl_usd = dec(row["realized"])
    into.resolution.SetInParent()
    into.resolution.winning_asset_id = row["winning_asset_id"] or ""
    into.resolution.payout_per_share = _text(row["payout_per_share"])
    if row["resolved_at"] is not None:
        into.resolution.resolve_time.CopyFrom(timestamp_of(row["resolved_at"]))
    into.redemption.SetInParent()
    if row["redemption_state"]:
        into.redemption.state = _REDEMPTIONS[row["redemption_state"]]  # type: ignore[assignment]
        into.redemption.tx_hash = row["redemption_tx_hash"]
        into.redemption.attempts = row["redemption_attempts"]
        into.redemption.reason = row["redemption_reason"]
        into.redemption.update_time.CopyFrom(timestamp_of(row["redemption_time"]))
    into.venue_shares = _text(row["venue_shares"])
    for field, column in (("reconcile_time", "reconciled_at"), ("open_time", "opened_at"),
                          ("update_time", "updated_at"), ("close_time", "closed_at")):
        if row[column] is not None:
            getattr(into, field).CopyFrom(timestamp_of(row[column]))
    return into
