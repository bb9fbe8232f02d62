"""The state a routing decision reads, built from what the adapters return (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from common.marketstate import MarketInfo
from common.reservations import WalletReserved, from_micro
from services.router.adapters.store import PositionAgg
from services.router.domain.model import ZERO, FollowerState, MarketRules
from services.router.domain.sells import unfilled_in_flight


def market_rules(info: MarketInfo | None) -> MarketRules | None:
    """Domain rules from the cached market info."""
    if info is None:
        return None
    return MarketRules(info.tick_size, info.min_order_size, info.neg_risk, info.closed, info.accepting_orders,
                       info.market_slug, info.event_slug, info.condition_id, info.taker_fee)


def in_token_market(pos: PositionAgg, token_cost: Decimal, market: str, asset: str) -> PositionAgg:
    """``pos`` (aggregated for ``market``) with the position of ``asset`` booked under no condition id, which
    PostgreSQL keys by the token (``token_cost``: its cost held), counted in ``market``, the token's: the executor
    keeps a position opened by a copy that carried no condition id so for its whole life."""
    if market == asset or asset not in pos.markets:
        return pos
    return replace(pos, market_cost_usd=pos.market_cost_usd + token_cost, markets=(pos.markets - {asset}) | {market})


def reserved_in_market(res: WalletReserved, by_token: WalletReserved, market: str, asset: str) -> WalletReserved:
    """``res`` (read for ``market``) with the USD the wallet reserved under the token (``by_token``: read for ``asset``
    as its market), the key copies of a trade without condition id reserved under before they carried their
    token's market, counted in ``market``."""
    if asset not in res.markets:
        return res
    return replace(res, market_usd_micro=res.market_usd_micro + by_token.market_usd_micro,
                   markets=(res.markets - {asset}) | {market})


def follower_state(pos: PositionAgg, res: WalletReserved, realized: Decimal,
                   balance: Decimal | None, sells: Sequence[tuple[Decimal, Decimal]] = (),
                   selling_by: Mapping[str, Decimal] | None = None, unsized: int = 0) -> FollowerState:
    """A wallet's state: positions and today's realized PnL (PostgreSQL) + in-flight reservations (Redis).

    The BUYs in flight the router did not send (``pos.buying_*``, PostgreSQL: manual BUYs reserve nothing in Redis)
    are in flight as the router's copies are: in the wallet's total, the trade's market and the open markets.

    ``sells``: (reserved, shares already booked) of the wallet's in-flight SELLs of the asset known by id;
    what their fills took out of the position is no longer held back (``domain.sells.unfilled_in_flight``).
    The wallet's exits and manual SELLs in flight (``pos.asset_exiting``, PostgreSQL: they reserve nothing in Redis)
    are held back too, as SELLs of no known subscription: from every part of a split position; so are the copies in
    flight the router did not send (``pos.asset_unrouted``: the executor's re-sized SELLs, which reserve nothing
    either), as their subscriptions' copies, as the executor counts them.
    ``selling_by``: of what is held back, the router's SELL copies' by subscription (:func:`selling_by`).
    ``unsized``: the router's SELL copies in flight not sized yet (they reserve no shares until the executor sizes
    them: a SELL then goes out with a fraction too). ``pos.asset_opened_by``: the subscription whose copy opened the
    position (``domain.holdings.bought_by``)."""
    shares = from_micro(res.asset_shares_micro) if res.asset_shares_micro else ZERO
    selling = unfilled_in_flight(shares, sells) if sells and shares else shares
    if pos.asset_exiting:
        selling += pos.asset_exiting
    unrouted = pos.asset_unrouted
    if unrouted:
        selling += sum(unrouted.values(), ZERO)
        if pos.asset_parts is not None:
            merged = dict(selling_by or {})
            for sub, n in unrouted.items():
                merged[sub] = merged.get(sub, ZERO) + n
            selling_by = merged
    reserved_total = from_micro(res.total_usd_micro) if res.total_usd_micro else ZERO
    reserved_market = from_micro(res.market_usd_micro) if res.market_usd_micro else ZERO
    reserved_markets = res.markets
    if pos.buying_markets:
        reserved_total += pos.buying_total_usd
        reserved_market += pos.buying_market_usd
        reserved_markets = reserved_markets | pos.buying_markets
    return FollowerState(
        pos.total_cost_usd, pos.market_cost_usd, pos.markets, pos.asset_size, realized, reserved_total,
        reserved_market, reserved_markets, selling, balance, pos.asset_parts, selling_by, unsized,
        pos.asset_opened_by)


def selling_by(listed: Sequence[tuple[str, int]] | None, sold: Mapping[str, Decimal], subscriptions: Mapping[str, str],
               carried: Mapping[str, int] | None) -> dict[str, Decimal] | None:
    """Shares the wallet's SELL copies in flight may still sell of an asset, by subscription: those ``listed``
    (client order id, micro-shares reserved) whose subscription is known, less what their fills booked (``sold``),
    and those the batch's earlier trades emitted (``carried``, micro-shares by subscription)."""
    out: dict[str, Decimal] = {}
    for coid, micro in listed or ():
        sub = subscriptions.get(coid)
        if sub:
            own = from_micro(micro)
            left = own - min(own, sold.get(coid, ZERO))
            if left > ZERO:
                out[sub] = out.get(sub, ZERO) + left
    for sub, micro in (carried or {}).items():
        out[sub] = out.get(sub, ZERO) + from_micro(micro)
    return out or None
