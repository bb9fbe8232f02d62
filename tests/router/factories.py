"""Builders of router domain values for tests (sensible defaults, override what matters)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from services.router.domain.model import (
    FilterRules,
    Follower,
    FollowerState,
    LeaderTrade,
    MarketRules,
    Policy,
    RiskRules,
    Side,
    SizingMode,
    SizingRules,
)

D = Decimal
NOW_MS = 1_790_272_257_000
CONDITION = "0x" + "ab" * 32
ASSET = "5034" + "1" * 70


def trade(**kw: Any) -> LeaderTrade:
    base = LeaderTrade(id="lt_1", tx_hash="0x" + "cd" * 32, wallet="0x" + "f5" * 20, asset_id=ASSET,
                       condition_id=CONDITION, side=Side.BUY, price=D("0.40"), size=D("250"),
                       notional_usd=D("100"), market_slug="will-it-rain", event_slug="weather-2026",
                       venue_time_ms=NOW_MS - 2_000)
    if "price" in kw and "notional_usd" not in kw:
        kw["notional_usd"] = kw["price"] * kw.get("size", base.size)
    return replace(base, **kw)


def market(**kw: Any) -> MarketRules:
    return replace(MarketRules(tick_size=D("0.01"), min_order_size=D("5")), **kw)


def follower(sub: str = "sub_1", wallet: str = "w_1", *, sizing: SizingRules | None = None,
             filters: FilterRules | None = None, risk: RiskRules | None = None, **kw: Any) -> Follower:
    return Follower(subscription_id=sub, follower_user_id="u_" + wallet, follower_wallet_id=wallet,
                    follower_proxy="0x" + "6a" * 20, mode=kw.pop("mode", "LIVE"),
                    sizing=sizing or SizingRules(SizingMode.FIXED_USD, fixed_usd=D("25")),
                    filters=filters or FilterRules(), risk=risk or RiskRules(), **kw)


def state(**kw: Any) -> FollowerState:
    return FollowerState(**kw)


def policy(**kw: Any) -> Policy:
    return replace(Policy(now_ms=NOW_MS), **kw)
