"""Protobuf → domain: leader trades and subscriptions (parsed once per hot-index change, not per trade).

A subscription whose config cannot be parsed is kept with ``invalid`` set, so every trade records
an INVALID_SUBSCRIPTION skip naming the field instead of silently dropping the follower. So is one
that would fail the whole trade for every follower (control refuses both): a USD amount above
``MAX_USD``, or a wallet id with characters other than letters, digits and ``_ . : -`` (the
reservation records are separated by ``|`` and ``,``).
"""

from __future__ import annotations

from decimal import Decimal

from common.decimals import MAX_USD, fmt, parse_decimal
from common.reservations import WALLET_ID
from services.router.domain.model import (
    ONE,
    ZERO,
    FilterRules,
    Follower,
    LeaderTrade,
    RiskRules,
    Side,
    SizingMode,
    SizingRules,
)
from tradingtools.common.v1 import common_pb2
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.market.v1 import market_pb2 as mpb

_SIZING_MODES = {
    spb.SIZING_MODE_FIXED_USD: SizingMode.FIXED_USD,
    spb.SIZING_MODE_PROPORTIONAL: SizingMode.PROPORTIONAL,
    spb.SIZING_MODE_PERCENT_OF_BALANCE: SizingMode.PERCENT_OF_BALANCE,
}
_MODES = {common_pb2.EXECUTION_MODE_LIVE: "LIVE", common_pb2.EXECUTION_MODE_PAPER: "PAPER"}


class RuleError(ValueError):
    """A subscription field the router cannot use."""


class TradeError(ValueError):
    """A leader trade the router cannot copy (the message names the field)."""


_SIDES = {common_pb2.SIDE_BUY: Side.BUY, common_pb2.SIDE_SELL: Side.SELL}


def _trade_decimal(raw: str, name: str) -> Decimal:
    try:
        return parse_decimal(raw)
    except ValueError:
        raise TradeError(f"leader trade {name} is not a decimal: {raw[:40]!r}") from None


def parse_trade(ev: mpb.LeaderTradeEvent) -> LeaderTrade:
    """The domain view of a leader trade; raises TradeError when it cannot be copied."""
    side = _SIDES.get(ev.side)
    if side is None:
        raise TradeError("leader trade side is not BUY or SELL")
    if not ev.asset_id:
        raise TradeError("leader trade has no asset id")
    price = _trade_decimal(ev.price, "price")
    size = _trade_decimal(ev.size, "size")
    if not ZERO < price < ONE:
        raise TradeError(f"leader trade price {ev.price!r} is not in (0, 1)")
    if size <= ZERO:
        raise TradeError(f"leader trade size {ev.size!r} is not > 0")
    notional = _trade_decimal(ev.notional_usd, "notionalUsd") if ev.notional_usd else price * size
    return LeaderTrade(id=ev.id, tx_hash=ev.tx_hash, wallet=ev.wallet.lower(), asset_id=ev.asset_id,
                       condition_id=ev.condition_id.lower(), side=side, price=price, size=size,
                       notional_usd=notional, market_slug=ev.market_slug, event_slug=ev.event_slug,
                       venue_time_ms=ev.venue_time_ms)


def _opt(msg: object, name: str, path: str, *, zero_is_unset: bool = True) -> Decimal | None:
    if not msg.HasField(name):  # type: ignore[attr-defined]
        return None
    raw = getattr(msg, name)
    if raw == "":
        return None
    try:
        value = parse_decimal(raw)
    except ValueError:
        raise RuleError(f"{path} is not a decimal: {raw!r}") from None
    if value < ZERO:
        raise RuleError(f"{path} must be >= 0, got {raw!r}")
    if zero_is_unset and value == ZERO:
        return None
    return value


def _usd(msg: object, name: str, path: str) -> Decimal | None:
    value = _opt(msg, name, path)
    if value is not None and value > MAX_USD:
        raise RuleError(f"{path} must be at most {fmt(MAX_USD)}, got {getattr(msg, name)!r}")
    return value


def parse_sizing(s: spb.Sizing) -> SizingRules:
    """Sizing rules; raises RuleError naming the field."""
    mode = _SIZING_MODES.get(s.mode)
    if mode is None:
        raise RuleError("sizing.mode is not set")
    return SizingRules(mode, _usd(s, "fixed_usd", "sizing.fixedUsd"), _opt(s, "ratio", "sizing.ratio"),
                       _opt(s, "percent_of_balance", "sizing.percentOfBalance"),
                       _usd(s, "min_order_usd", "sizing.minOrderUsd"),
                       _usd(s, "max_order_usd", "sizing.maxOrderUsd"))


def parse_filters(f: spb.Filters) -> FilterRules:
    """Filter rules; raises RuleError naming the field."""
    bps = f.max_slippage_bps if f.HasField("max_slippage_bps") else None
    if bps is not None and bps < 0:
        raise RuleError(f"filters.maxSlippageBps must be >= 0, got {bps}")
    return FilterRules(
        min_price=_opt(f, "min_price", "filters.minPrice"),
        max_price=_opt(f, "max_price", "filters.maxPrice"),
        min_leader_trade_usd=_usd(f, "min_leader_trade_usd", "filters.minLeaderTradeUsd"),
        allowlist=tuple(e.strip().lower() for e in f.market_allowlist if e.strip()),
        denylist=tuple(e.strip().lower() for e in f.market_denylist if e.strip()),
        copy_sells=f.copy_sells if f.HasField("copy_sells") else True,
        max_slippage_bps=bps,
    )


def parse_risk(r: spb.Risk) -> RiskRules:
    """Risk caps; "0" or unset means no cap."""
    max_open = r.max_open_positions if r.HasField("max_open_positions") else 0
    if max_open < 0:
        raise RuleError(f"risk.maxOpenPositions must be >= 0, got {max_open}")
    return RiskRules(
        max_market_exposure_usd=_usd(r, "max_market_exposure_usd", "risk.maxMarketExposureUsd"),
        max_total_exposure_usd=_usd(r, "max_total_exposure_usd", "risk.maxTotalExposureUsd"),
        max_open_positions=max_open or None,
        daily_loss_limit_usd=_usd(r, "daily_loss_limit_usd", "risk.dailyLossLimitUsd"),
    )


def parse_multiplier(raw: str) -> Decimal:
    """The perf multiplier ("" means 1); must be > 0."""
    if not raw:
        return ONE
    try:
        value = parse_decimal(raw)
    except ValueError:
        raise RuleError(f"perf.appliedMultiplier is not a decimal: {raw!r}") from None
    if value <= ZERO:
        raise RuleError(f"perf.appliedMultiplier must be > 0, got {raw!r}")
    return value


_FALLBACK_SIZING = SizingRules(SizingMode.FIXED_USD)


# The longest id a follower may carry into its copies (control's identifiers are at most 128 characters): one
# longer (a corrupt index) would make its routed part too large for any gRPC message, set aside unserved.
MAX_FOLLOWER_ID_CHARS = 256
_ID_FIELDS = (("id", "id"), ("follower_user_id", "followerUserId"), ("follower_wallet_id", "followerWalletId"),
              ("follower_proxy", "followerProxy"))


def parse_follower(sub: spb.Subscription) -> Follower:
    """The routing view of one subscription (never raises: a bad config sets ``invalid``; its ids are cut to
    :data:`MAX_FOLLOWER_ID_CHARS` then, so its skip stays small)."""
    ids = (sub.id, sub.follower_user_id, sub.follower_wallet_id, sub.follower_proxy.lower())
    try:
        for name, path in _ID_FIELDS:
            if len(getattr(sub, name)) > MAX_FOLLOWER_ID_CHARS:
                raise RuleError(f"{path} is longer than {MAX_FOLLOWER_ID_CHARS} characters")
        mode = _MODES.get(sub.mode)
        if mode is None:
            raise RuleError("mode is not LIVE or PAPER")
        if not sub.follower_wallet_id:
            raise RuleError("followerWalletId is empty")
        if not WALLET_ID.fullmatch(sub.follower_wallet_id):
            raise RuleError(f"followerWalletId {sub.follower_wallet_id[:40]!r} may contain only letters, digits"
                            " and _ . : -")
        return Follower(*ids, mode=mode, sizing=parse_sizing(sub.sizing), filters=parse_filters(sub.filters),
                        risk=parse_risk(sub.risk), multiplier=parse_multiplier(sub.perf.applied_multiplier),
                        active_since_ms=sub.active_time.ToMilliseconds() if sub.HasField("active_time") else 0,
                        created_ms=sub.create_time.ToMilliseconds() if sub.HasField("create_time") else 0)
    except RuleError as exc:
        ids = tuple(i[:MAX_FOLLOWER_ID_CHARS] for i in ids)  # type: ignore[assignment]
        return Follower(*ids, mode=_MODES.get(sub.mode, "LIVE"), sizing=_FALLBACK_SIZING,
                        filters=FilterRules(), risk=RiskRules(), invalid=str(exc))
