"""One decision per follower for one leader trade: an order to emit or a skip with a reason.

BUY: filters → sizing (mode × multiplier, clamped to [minOrderUsd, maxOrderUsd]) → the operator ceiling
(``TT_MAX_ORDER_USD``, the cut noted on the order; still above ``MAX_USD``: SIZE_OUT_OF_RANGE) → daily loss → open
positions → exposure headroom → round down to the cent → market minimum (never $0; a cut that leaves too little
names the cap, the ceiling as MAX_ORDER_USD).
SELL: made before the subscription existed, or before it became active on a position opened since
(``filters.exit_before_active``) →
copySells and market lists (in a market they cannot rule out, mirrored only when the subscription's copies bought
shares of the token) → SELL sizing on the subscription's part of the position (see ``sells``) → the
operator ceiling on size × leader price.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from common import ceiling
from common.decimals import fmt
from common.ids import hash_id
from services.router.domain import filters, holdings, risk, sells, sizing
from services.router.domain.market_rules import buy_minimum_usd, floor_cents
from services.router.domain.model import (
    SHARE_QUANTUM,
    ZERO,
    Decision,
    Follower,
    FollowerState,
    LeaderTrade,
    MarketRules,
    OrderIntent,
    Policy,
    Reason,
    Side,
    Skip,
)

_EMPTY_STATE = FollowerState()


def client_order_id(leader_trade_id: str, follower_wallet_id: str, asset_id: str) -> str:
    """The idempotency key of a copy: one order per (leader trade, follower wallet, asset)."""
    return hash_id("co", leader_trade_id, follower_wallet_id, asset_id)


def client_order_ids(leader_trade_id: str, asset_id: str) -> Callable[[str], str]:
    """``client_order_id`` of one trade's copies by follower wallet (the trade's part hashed once)."""
    head = hashlib.sha256(f"{leader_trade_id}\x00".encode())
    tail = f"\x00{asset_id}"

    def key(follower_wallet_id: str) -> str:
        h = head.copy()
        h.update((follower_wallet_id + tail).encode())
        return "co_" + h.hexdigest()[:32]

    return key


def _skip(f: Follower, reason: Reason, detail: str) -> Skip:
    return Skip(f.subscription_id, f.follower_wallet_id, reason, detail)


def _slippage(f: Follower, policy: Policy) -> int:
    bps = f.filters.max_slippage_bps
    return policy.default_max_slippage_bps if bps is None else bps


def decide_buy(trade: LeaderTrade, f: Follower, market: MarketRules, state: FollowerState,
               policy: Policy, market_mins: dict[int, Decimal] | None = None,
               coid: Callable[[str], str] | None = None) -> Decision:
    """Size a copied BUY or say why not (``market_mins``: the trade's ``buy_minimum_usd`` by slippage
    tolerance, filled as needed; ``coid``: the trade's ``client_order_ids``)."""
    sized = sizing.size_buy(f.sizing, trade, state.balance_usd, f.multiplier, policy.max_order_usd)
    if not isinstance(sized, sizing.Sized):
        return _skip(f, *sized)
    wanted, note = ceiling.cap_buy(sized.amount, policy.max_order_usd)
    # positions of a trade without a condition id are counted under its asset (as the router's market key)
    rejected = risk.daily_loss(f.risk, state) or risk.open_positions(f.risk, state,
                                                                    trade.condition_id or trade.asset_id)
    if rejected is not None:
        return _skip(f, *rejected)
    capped = risk.cap_exposure(f.risk, state, wanted)
    if not isinstance(capped, risk.Capped):
        return _skip(f, *capped)
    amount = floor_cents(capped.amount)
    bps = _slippage(f, policy)
    mins = market_mins if market_mins is not None else {}
    market_min = mins.get(bps)
    if market_min is None:
        market_min = mins[bps] = buy_minimum_usd(trade.price, market.min_order_size, policy.marketable_buy_min_usd,
                                                 bps)
    # minOrderUsd raised the sizing before the risk cut (the contract's order: clamp to [min, max], then to
    # headroom); what the cut leaves is sent when the market takes it, else the cap is why it was not. Nothing
    # left once rounded down to the cent is never sent, even where the market minimum is $0.
    if amount < market_min or amount <= ZERO:
        return _too_small(f, trade, market, policy, sized, capped, note, amount, market_min, bps)
    if market.taker_fee is not None and market.taker_fee.rate > 0:
        # the venue takes its fee in shares: a copy holding fewer than the minimum once it is taken could never be
        # sold again, so the minimum counts it (the contract: a BUY below the market's minimum is skipped)
        net = sizing.net_buy_minimum(trade.price, market.min_order_size, policy.marketable_buy_min_usd, bps,
                                     market.taker_fee, market.tick_size)
        short = sizing.below_net_minimum(amount, net)
        if short is not None:  # the cap that cut it is why, as below the fee-blind minimum (_too_small)
            if capped.cut_by is not None:
                return _skip(f, capped.cut_by, f"{capped.detail}; {short[1]}")
            return _skip(f, *(short if not note else (Reason.MAX_ORDER_USD, f"{note}; {short[1]}")))
    key = coid(f.follower_wallet_id) if coid else client_order_id(trade.id, f.follower_wallet_id, trade.asset_id)
    return OrderIntent(f.subscription_id, f.follower_wallet_id, key, Side.BUY, amount, None, bps,
                       note=note if capped.cut_by is None else "")


def _too_small(f: Follower, trade: LeaderTrade, market: MarketRules, policy: Policy, sized: sizing.Sized,
               capped: risk.Capped, note: str, amount: Decimal, market_min: Decimal, bps: int) -> Skip:
    """Why a BUY left below the market minimum, or at $0, is not sent: the cap that cut it, else its size."""
    if capped.cut_by is not None:
        return _skip(f, capped.cut_by, f"{capped.detail}, below the market minimum ${fmt(market_min)}")
    if note:
        return _skip(f, Reason.MAX_ORDER_USD, f"{note}, below the market minimum ${fmt(market_min)}")
    if amount <= ZERO:
        return _skip(f, Reason.SIZE_ZERO, f"sized to $0 once rounded down to the cent ({sized.how})")
    return _skip(f, Reason.BELOW_MARKET_MINIMUM,
                 f"${fmt(amount)} ({sized.how}) < market minimum ${fmt(market_min)} "
                 f"(min size {fmt(market.min_order_size)} × price {fmt(trade.price)} + {bps} bps slippage, "
                 f"marketable BUY minimum ${fmt(policy.marketable_buy_min_usd)})")


def decide_sell(trade: LeaderTrade, f: Follower, market: MarketRules, state: FollowerState,
                leader_before: Decimal | None, policy: Policy, coid: Callable[[str], str] | None = None) -> Decision:
    """Size a copied SELL or say why not."""
    size = sells.size_sell(state, trade.size, leader_before, market.min_order_size, f.subscription_id)
    if isinstance(size, tuple):
        return _skip(f, *size)
    key = coid(f.follower_wallet_id) if coid else client_order_id(trade.id, f.follower_wallet_id, trade.asset_id)
    if isinstance(size, sells.AfterBuy):
        return OrderIntent(f.subscription_id, f.follower_wallet_id, key, Side.SELL, None, None, _slippage(f, policy),
                           sell_fraction=size.fraction)
    size, note = ceiling.cap_sell(size, trade.price, policy.max_order_usd)
    if note and size < max(market.min_order_size, SHARE_QUANTUM):
        return _skip(f, Reason.MAX_ORDER_USD, f"{note}, below the market minimum {fmt(market.min_order_size)}")
    return OrderIntent(f.subscription_id, f.follower_wallet_id, key, Side.SELL, None, size, _slippage(f, policy),
                       note=note)


def decide(trade: LeaderTrade, f: Follower, market: MarketRules, state: FollowerState,
           leader_before: Decimal | None, policy: Policy, *, ids: tuple[str, str, str] | None = None,
           market_mins: dict[int, Decimal] | None = None, coid: Callable[[str], str] | None = None,
           opened: Mapping[tuple[str, str], int] | None = None) -> Decision:
    """The decision for one follower (trade-wide gates are checked by ``route``, which also passes the
    per-trade ``ids``, ``market_mins`` and ``coid`` shared by its followers; ``opened``: when the wallets' positions
    opened, Unix ms by (wallet, asset))."""
    if f.invalid:
        return _skip(f, Reason.INVALID_SUBSCRIPTION, f.invalid)
    early = filters.before_active(f.active_since_ms, trade)
    if early is None and trade.side is Side.SELL and filters.made_before_active(f.active_since_ms, trade):
        early = filters.exit_before_active(f.active_since_ms, trade, state.held_size,
                                           opened.get((f.follower_wallet_id, trade.asset_id), 0) if opened else 0,
                                           f.created_ms)
    if early is not None:
        return _skip(f, *early)
    lists = f.filters.allowlist or f.filters.denylist
    owns = trade.side is Side.BUY or not lists or holdings.bought_by(state, f.subscription_id)
    rejected = filters.subscription_filters(f.filters, trade, market, ids, owns=owns)
    if rejected is not None:
        return _skip(f, *rejected)
    if trade.side is Side.BUY:
        return decide_buy(trade, f, market, state, policy, market_mins, coid)
    return decide_sell(trade, f, market, state, leader_before, policy, coid)


def route(trade: LeaderTrade, followers: Sequence[Follower], market: MarketRules | None,
          states: Mapping[str, FollowerState], leader_before: Decimal | None,
          policy: Policy, opened: Mapping[tuple[str, str], int] | None = None) -> list[Decision]:
    """Decisions for every follower of the leader, in the followers' order.

    ``states`` is keyed by follower wallet id; a missing wallet has no positions, fills or reservations. ``opened``:
    when the wallets' positions in the asset opened (Unix ms by (wallet, asset); a SELL's, see ``decide``).
    """
    if market is None:
        return [_skip(f, Reason.MARKET_INFO_UNAVAILABLE,
                      f"no market info for asset {trade.asset_id} (CLOB market info unavailable)")
                for f in followers]
    gate = filters.trade_gate(trade, market, policy)
    if gate is not None:
        return [_skip(f, *gate) for f in followers]
    ids = filters.market_identifiers(trade, market)
    market_mins: dict[int, Decimal] = {}
    coid = client_order_ids(trade.id, trade.asset_id)
    return [decide(trade, f, market, states.get(f.follower_wallet_id, _EMPTY_STATE), leader_before, policy,
                   ids=ids, market_mins=market_mins, coid=coid, opened=opened)
            for f in followers]


def invalid_trade(followers: Sequence[Follower], detail: str) -> list[Decision]:
    """Every follower skipped because the leader trade itself cannot be copied."""
    return [_skip(f, Reason.INVALID_TRADE, detail) for f in followers]
