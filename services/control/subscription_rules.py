"""Subscription input rules (pure): defaults, validation and PATCH merging.

Defaults for omitted config (applied on create, and when PATCH clears a field through ``updateMask``):
``sizing.minOrderUsd`` "1" (``maxOrderUsd`` absent = no cap); ``filters.minLeaderTradeUsd`` "0",
``copySells`` true, ``maxSlippageBps`` 200 (``minPrice`` / ``maxPrice`` absent = no bound);
every ``risk`` cap "0"/0 (= no cap); ``exits`` percentages "0" (= none); ``perf.lossStopUsd`` and
``profitScaleAtUsd`` "0" (= off), ``profitScaleMultiplier`` "1"; ``perf.appliedMultiplier`` "1".

Sizing fields the chosen mode does not use may be omitted or "0"; the chosen mode's field is required.
A PATCH that changes ``mode``, ``perf.profitScaleAtUsd`` or ``perf.profitScaleMultiplier`` puts
``perf.appliedMultiplier`` back to "1": a scale is undone with the rule (or the venue) it was made for, and
guard decides again under the new rules.
Every USD amount is at most ``common.decimals.MAX_USD``; follower ids take letters, digits and ``_ . : -``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from functools import lru_cache

from google.protobuf.message import Message

from common.decimals import fmt
from services.control import validation as v
from services.control.errors import FailedPrecondition, InvalidArgument
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb

CONFIG_MESSAGES = ("sizing", "filters", "risk", "exits", "perf")
IDENTITY_FIELDS = ("follower_user_id", "follower_wallet_id", "follower_proxy", "leader_proxy")
OUTPUT_ONLY = frozenset({"id", "state", "stats", "paused_reason", "create_time", "update_time", "active_time",
                         "request_id", "perf.applied_multiplier"})
MAX_LABEL_LEN = 200
MAX_MARKETS = 1000
MAX_LADDER_STEPS = 20
MAX_SLIPPAGE_BPS = 10_000
MAX_OPEN_POSITIONS = 100_000
MAX_PROFIT_SCALE = Decimal(10)

_STOP_PCT = v.Range(Decimal(0), True, Decimal(100), False)
_SCALE = v.Range(Decimal(0), False, MAX_PROFIT_SCALE, True)
# (field, mode that needs it, range when that mode is chosen, range otherwise)
_SIZING_MODE_FIELDS = (
    ("fixed_usd", spb.SIZING_MODE_FIXED_USD, v.USD_POSITIVE, v.USD),
    ("ratio", spb.SIZING_MODE_PROPORTIONAL, v.POSITIVE, v.NON_NEGATIVE),
    ("percent_of_balance", spb.SIZING_MODE_PERCENT_OF_BALANCE, v.PERCENT, v.PERCENT_OR_ZERO),
)
_DECIMAL_FIELDS: dict[str, tuple[tuple[str, v.Range], ...]] = {
    "risk": (("max_market_exposure_usd", v.USD), ("max_total_exposure_usd", v.USD),
             ("daily_loss_limit_usd", v.USD)),
    "exits": (("take_profit_pct", v.NON_NEGATIVE), ("stop_loss_pct", _STOP_PCT),
              ("trailing_stop_pct", _STOP_PCT)),
    "perf": (("loss_stop_usd", v.USD), ("profit_scale_at_usd", v.USD),
             ("profit_scale_multiplier", _SCALE)),
}
_DEFAULTS: dict[str, dict[str, object]] = {
    "sizing": {"min_order_usd": "1"},
    "filters": {"min_leader_trade_usd": "0", "copy_sells": True, "max_slippage_bps": 200},
    "risk": {"max_market_exposure_usd": "0", "max_total_exposure_usd": "0", "max_open_positions": 0,
             "daily_loss_limit_usd": "0"},
    "exits": {"take_profit_pct": "0", "stop_loss_pct": "0", "trailing_stop_pct": "0"},
    "perf": {"loss_stop_usd": "0", "profit_scale_at_usd": "0", "profit_scale_multiplier": "1"},
}


@lru_cache(maxsize=1024)
def json_path(path: str) -> str:
    """``filters.market_allowlist`` → ``filters.marketAllowlist``."""
    return ".".join(re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p) for p in path.split("."))


def snake_path(path: str) -> str:
    """``filters.marketAllowlist`` → ``filters.market_allowlist`` (snake_case passes through)."""
    return ".".join(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), p) for p in path.split("."))


def apply_defaults(sub: spb.Subscription) -> None:
    """Fill every omitted config field with its documented default (in place)."""
    for name, defaults in _DEFAULTS.items():
        msg = getattr(sub, name)
        for field, value in defaults.items():
            if not msg.HasField(field):
                setattr(msg, field, value)
    if not sub.perf.applied_multiplier:
        sub.perf.applied_multiplier = "1"
    if not sub.HasField("label"):
        sub.label = ""


def check_live_allowed(mode: int, live_enabled: bool) -> None:
    """LIVE needs an execution API: never paper-trade a LIVE subscription silently."""
    if mode == cpb.EXECUTION_MODE_LIVE and not live_enabled:
        raise FailedPrecondition(
            "mode: EXECUTION_MODE_LIVE needs the Insiders API (TT_INSIDERS_API_URL is not configured); "
            "use EXECUTION_MODE_PAPER")


def new_subscription(raw: spb.Subscription) -> spb.Subscription:
    """A validated, normalized subscription from a create request (output-only fields ignored but
    ``state``: a create asking for one is refused, as the subscription would be made ACTIVE)."""
    if raw.state != spb.SUBSCRIPTION_STATE_UNSPECIFIED:
        raise InvalidArgument("state", "output only: a subscription is created ACTIVE; pause it after the create")
    sub = spb.Subscription(
        follower_user_id=v.identifier("followerUserId", raw.follower_user_id),
        follower_wallet_id=v.follower_id("followerWalletId", raw.follower_wallet_id),
        follower_proxy=v.address("followerProxy", raw.follower_proxy),
        leader_proxy=v.address("leaderProxy", raw.leader_proxy),
    )
    if sub.leader_proxy == sub.follower_proxy:
        raise InvalidArgument("leaderProxy", "must differ from followerProxy")
    if raw.HasField("label"):
        sub.label = raw.label
    sub.mode = raw.mode
    for name in CONFIG_MESSAGES:
        getattr(sub, name).CopyFrom(getattr(raw, name))
    sub.perf.ClearField("applied_multiplier")
    apply_defaults(sub)
    validate_config(sub)
    return sub


def validate_config(sub: spb.Subscription) -> None:
    """Check label, mode and every config field; rewrite decimals canonically (in place)."""
    sub.label = v.text("label", sub.label, max_len=MAX_LABEL_LEN)
    v.enum("mode", sub.mode, cpb.ExecutionMode.DESCRIPTOR)
    _validate_sizing(sub.sizing)
    _validate_filters(sub.filters)
    for name, fields in _DECIMAL_FIELDS.items():
        msg = getattr(sub, name)
        for field, within in fields:
            setattr(msg, field, v.canonical(json_path(f"{name}.{field}"), getattr(msg, field), within))
    v.integer("risk.maxOpenPositions", sub.risk.max_open_positions, 0, MAX_OPEN_POSITIONS)
    _validate_ladder(sub.exits)
    sub.perf.applied_multiplier = v.canonical("perf.appliedMultiplier", sub.perf.applied_multiplier,
                                              v.POSITIVE)


def _validate_sizing(s: spb.Sizing) -> None:
    mode = v.enum("sizing.mode", s.mode, spb.SizingMode.DESCRIPTOR)
    for field, needed_by, strict, loose in _SIZING_MODE_FIELDS:
        path = json_path(f"sizing.{field}")
        if s.HasField(field):
            setattr(s, field, v.canonical(path, getattr(s, field), strict if mode == needed_by else loose))
        elif mode == needed_by:
            raise InvalidArgument(path, f"required when sizing.mode is {spb.SizingMode.Name(needed_by)}")
    low = v.decimal("sizing.minOrderUsd", s.min_order_usd, v.USD)
    s.min_order_usd = fmt(low)
    if s.HasField("max_order_usd"):
        high = v.decimal("sizing.maxOrderUsd", s.max_order_usd, v.USD_POSITIVE)
        if high < low:
            raise InvalidArgument("sizing.maxOrderUsd", f"must be >= sizing.minOrderUsd ({s.min_order_usd})")
        s.max_order_usd = fmt(high)


def _validate_filters(f: spb.Filters) -> None:
    low = high = None
    if f.HasField("min_price"):
        low = v.decimal("filters.minPrice", f.min_price, v.PRICE)
        f.min_price = fmt(low)
    if f.HasField("max_price"):
        high = v.decimal("filters.maxPrice", f.max_price, v.PRICE)
        f.max_price = fmt(high)
    if low is not None and high is not None and high < low:
        raise InvalidArgument("filters.maxPrice", f"must be >= filters.minPrice ({f.min_price})")
    f.min_leader_trade_usd = v.canonical("filters.minLeaderTradeUsd", f.min_leader_trade_usd, v.USD)
    allow = _markets("filters.marketAllowlist", f.market_allowlist)
    deny = _markets("filters.marketDenylist", f.market_denylist)
    for i, market in enumerate(deny):
        if market in allow:
            raise InvalidArgument(f"filters.marketDenylist[{i}]", f'"{market}" is also in filters.marketAllowlist')
    f.market_allowlist[:] = allow
    f.market_denylist[:] = deny
    v.integer("filters.maxSlippageBps", f.max_slippage_bps, 0, MAX_SLIPPAGE_BPS)


def _markets(path: str, values: Sequence[str]) -> list[str]:
    """Market slugs / condition ids: trimmed, lower-cased, de-duplicated in order."""
    if len(values) > MAX_MARKETS:
        raise InvalidArgument(path, f"at most {MAX_MARKETS} entries, got {len(values)}")
    out: list[str] = []
    for i, raw in enumerate(values):
        market = v.identifier(f"{path}[{i}]", raw, max_len=200).lower()
        if market not in out:
            out.append(market)
    return out


def _validate_ladder(e: spb.Exits) -> None:
    if len(e.ladder) > MAX_LADDER_STEPS:
        raise InvalidArgument("exits.ladder", f"at most {MAX_LADDER_STEPS} steps, got {len(e.ladder)}")
    previous: Decimal | None = None
    for i, step in enumerate(e.ladder):
        gain = v.decimal(f"exits.ladder[{i}].gainPct", step.gain_pct, v.POSITIVE)
        if previous is not None and gain <= previous:
            raise InvalidArgument(f"exits.ladder[{i}].gainPct", "must be greater than the previous step's")
        previous = gain
        step.gain_pct = fmt(gain)
        step.sell_fraction = v.canonical(f"exits.ladder[{i}].sellFraction", step.sell_fraction, v.FRACTION)


def merge_patch(current: spb.Subscription, patch: spb.Subscription,
                mask: list[str] | tuple[str, ...] = ()) -> spb.Subscription:
    """The subscription after a PATCH: present fields change, ``mask`` paths are set or cleared.

    Identity (follower ids and proxies) and the leader cannot change: a different value is an error,
    the same value is accepted. Output-only fields in the body are ignored, except a ``state`` that
    differs from the current one (use pause / resume / DELETE). A change of mode or of the profit-scale rule
    puts the applied multiplier back to "1".
    """
    _check_immutable(current, patch)
    merged = spb.Subscription()
    merged.CopyFrom(current)
    if patch.HasField("label"):
        merged.label = patch.label
    if patch.mode:
        merged.mode = patch.mode
    for name in CONFIG_MESSAGES:
        if patch.HasField(name):
            _merge_present(getattr(merged, name), getattr(patch, name))
    for raw_path in mask:
        _apply_mask_path(merged, patch, raw_path)
    apply_defaults(merged)
    validate_config(merged)
    if merged.mode != current.mode or _profit_scale(merged.perf) != _profit_scale(current.perf):
        merged.perf.applied_multiplier = "1"
    return merged


def _profit_scale(perf: spb.Perf) -> tuple[Decimal, Decimal]:
    return Decimal(perf.profit_scale_at_usd or "0"), Decimal(perf.profit_scale_multiplier or "1")


def perf_rules(mode: int, perf: spb.Perf, path: str = "perf") -> tuple[int, Decimal, Decimal, Decimal]:
    """(mode, lossStopUsd, profitScaleAtUsd, profitScaleMultiplier) of ``perf``, an absent field at its default:
    what a performance decision is made under. Raises InvalidArgument (naming ``path``) on a bad value."""
    defaults = _DEFAULTS["perf"]
    loss, at, times = (v.decimal(json_path(f"{path}.{field}"), getattr(perf, field) or str(defaults[field]), within)
                       for field, within in _DECIMAL_FIELDS["perf"])
    return mode, loss, at, times


def config_equal(a: spb.Subscription, b: spb.Subscription) -> bool:
    """True when label, mode and every config message are equal."""
    return (a.label == b.label and a.mode == b.mode
            and all(getattr(a, n) == getattr(b, n) for n in CONFIG_MESSAGES))


def _check_immutable(current: spb.Subscription, patch: spb.Subscription) -> None:
    if patch.id.strip() and patch.id.strip() != current.id:
        raise InvalidArgument("id", "does not match the subscription addressed")
    for field in IDENTITY_FIELDS:
        value = getattr(patch, field).strip()
        if field.endswith("proxy"):
            value = value.lower()
        if value and value != getattr(current, field):
            raise InvalidArgument(json_path(field), "cannot change")
    if patch.state and patch.state != current.state:
        raise InvalidArgument("state", "output only: use pause, resume or DELETE to change it")


def _merge_present(dst: Message, src: Message) -> None:
    for field in src.DESCRIPTOR.fields:
        name = field.name
        if name == "applied_multiplier":
            continue
        if field.is_repeated:
            if len(getattr(src, name)):
                dst.ClearField(name)
                getattr(dst, name).extend(getattr(src, name))
        elif field.has_presence:
            if src.HasField(name):
                setattr(dst, name, getattr(src, name))
        elif getattr(src, name):
            setattr(dst, name, getattr(src, name))


def _apply_mask_path(merged: spb.Subscription, patch: spb.Subscription, raw_path: str) -> None:
    path = snake_path(raw_path.strip())
    parts = path.split(".")
    if path in OUTPUT_ONLY:
        raise InvalidArgument("updateMask", f'"{json_path(path)}" is output only')
    if path in IDENTITY_FIELDS:
        raise InvalidArgument(json_path(path), "cannot change")
    if path == "label":
        merged.label = patch.label if patch.HasField("label") else ""
        return
    if path == "mode":
        merged.mode = patch.mode
        return
    if parts[0] not in CONFIG_MESSAGES or len(parts) > 2:
        raise InvalidArgument("updateMask", f'unknown field "{raw_path.strip()}"')
    dst: Message = getattr(merged, parts[0])
    src: Message = getattr(patch, parts[0])
    if len(parts) == 1:
        applied = merged.perf.applied_multiplier
        dst.CopyFrom(src)
        merged.perf.applied_multiplier = applied
        return
    field = src.DESCRIPTOR.fields_by_name.get(parts[1])
    if field is None:
        raise InvalidArgument("updateMask", f'unknown field "{raw_path.strip()}"')
    dst.ClearField(parts[1])
    if field.is_repeated:
        getattr(dst, parts[1]).extend(getattr(src, parts[1]))
    elif not field.has_presence or src.HasField(parts[1]):
        setattr(dst, parts[1], getattr(src, parts[1]))
