"""Trigger input rules (pure): validation of creates and PATCH merging.

- ``TAKE_PROFIT`` / ``STOP_LOSS`` need ``triggerPrice`` in (0, 1); ``trailPct`` and ``activationPrice``
  must be absent or "0".
- ``TRAILING_STOP`` needs ``trailPct`` in (0, 100); ``activationPrice`` is "0" (track at once) or in
  (0, 1); ``triggerPrice`` must be absent or "0". A PATCH that leaves ``activationPrice`` above the stored
  ``highWaterMark`` resets the mark to "0" (inactive until the price reaches the activation price); any other
  PATCH keeps it (:func:`mark_after_patch`).
- Exactly one of ``size`` (shares, at least one share step: 0.01) and ``sellFraction`` (in (0, 1]) is non-zero.
- ``priceSource`` defaults to BEST_BID; ``source`` is output only and always MANUAL (guard writes COPY exits itself).
- ``ocoGroup`` groups the exits of one position (wallet, followerWalletId, assetId): joining a group that has an
  ARMED trigger on another position is refused (:func:`oco_refusal`).
- Any OPEN position of the wallet may be guarded, whatever its origin (copied, manual, external). A
  trigger on a position whose market resolved is refused (MARKET_RESOLVED: nothing is left to sell); a
  ``sellFraction`` trigger needs an OPEN position holding at least one share step (NO_POSITION). A
  ``size`` trigger may be set before the shares are held; guard cancels it (NO_POSITION) if none are
  when it fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.decimals import MIN_HELD_SHARES
from services.control import validation as v
from services.control.errors import ControlError, FailedPrecondition, InvalidArgument
from services.control.subscription_rules import json_path
from tradingtools.control.v1 import trigger_pb2 as tpb

VALUE_FIELDS = ("trigger_price", "trail_pct", "activation_price", "size", "sell_fraction")
IMMUTABLE_FIELDS = ("wallet", "follower_wallet_id", "subscription_id", "asset_id", "kind", "oco_group",
                    "price_source", "source")


def new_trigger(raw: tpb.Trigger) -> tpb.Trigger:
    """A validated, normalized ARMED-to-be trigger from a create request (output-only fields ignored but
    ``state``: a create asking for one is refused, as the trigger would be ARMED)."""
    if raw.state != tpb.TRIGGER_STATE_UNSPECIFIED:
        raise InvalidArgument("state", "output only: a trigger is created ARMED; DELETE cancels it")
    t = tpb.Trigger(
        wallet=v.address("wallet", raw.wallet),
        follower_wallet_id=v.follower_id("followerWalletId", raw.follower_wallet_id),
        subscription_id=v.identifier("subscriptionId", raw.subscription_id, required=False),
        asset_id=v.token_id("assetId", raw.asset_id),
        kind=v.enum("kind", raw.kind, tpb.TriggerKind.DESCRIPTOR),  # type: ignore[arg-type]
        oco_group=v.identifier("ocoGroup", raw.oco_group, required=False),
        price_source=(v.enum("priceSource", raw.price_source, tpb.PriceSource.DESCRIPTOR, required=False)
                      or tpb.PRICE_SOURCE_BEST_BID),  # type: ignore[arg-type]
        source=tpb.TRIGGER_SOURCE_MANUAL,  # output only: COPY triggers are guard's exits, never made here
        high_water_mark="0",
    )
    for field in VALUE_FIELDS:
        setattr(t, field, getattr(raw, field) if raw.HasField(field) else "0")
    validate_values(t)
    return t


def validate_values(t: tpb.Trigger) -> None:
    """Check price, trail, activation, size and fraction against the kind; canonicalize (in place)."""
    kind_name = tpb.TriggerKind.Name(t.kind)
    trailing = t.kind == tpb.TRIGGER_KIND_TRAILING_STOP
    if trailing:
        _unused(t, "trigger_price", kind_name)
        t.trail_pct = _required(t.trail_pct, "trail_pct", v.PERCENT_OPEN, kind_name)
        t.activation_price = _optional(t.activation_price, "activation_price", v.PRICE)
    else:
        t.trigger_price = _required(t.trigger_price, "trigger_price", v.PRICE, kind_name)
        _unused(t, "trail_pct", kind_name)
        _unused(t, "activation_price", kind_name)
    t.size = _optional(t.size, "size", v.SHARES)
    t.sell_fraction = _optional(t.sell_fraction, "sell_fraction", v.FRACTION)
    size_set, fraction_set = t.size != "0", t.sell_fraction != "0"
    if size_set and fraction_set:
        raise InvalidArgument("size", "exactly one of size and sellFraction may be non-zero")
    if not size_set and not fraction_set:
        raise InvalidArgument("sellFraction", "required: exactly one of size (shares) and sellFraction "
                                              "(of the position, in (0, 1]) must be non-zero")


@dataclass(frozen=True, slots=True)
class HeldPosition:
    """What a trigger check needs of the wallet's current position in the asset."""

    state: str  # as stored: OPEN, CLOSED, RESOLVED_WON, RESOLVED_LOST, REDEEMED
    size: Decimal
    wallet: str = ""  # the follower proxy that holds it ("" when unknown)


RESOLVED_STATES = frozenset({"RESOLVED_WON", "RESOLVED_LOST", "REDEEMED"})


def position_refusal(t: tpb.Trigger, pos: HeldPosition | None) -> ControlError | None:
    """Why ``t`` cannot guard the wallet's position ``pos`` (None: it can)."""
    if pos is not None and pos.wallet and pos.wallet.lower() != t.wallet:
        # its SELL would go out for followerWalletId's shares under another wallet's proxy
        return InvalidArgument("wallet", f"followerWalletId {t.follower_wallet_id} holds assetId {t.asset_id} in "
                                         f"wallet {pos.wallet.lower()}, not in {t.wallet}")
    if pos is not None and pos.state in RESOLVED_STATES:
        return FailedPrecondition(
            f"assetId: MARKET_RESOLVED: the market of assetId {t.asset_id} has resolved (the position of "
            f"followerWalletId {t.follower_wallet_id} is POSITION_STATE_{pos.state}); nothing is left to sell")
    if t.sell_fraction != "0" and (pos is None or pos.state != "OPEN" or pos.size < MIN_HELD_SHARES):
        ended = f" (its last position there is POSITION_STATE_{pos.state})" \
            if pos is not None and pos.state != "OPEN" else ""
        return FailedPrecondition(
            f"sellFraction: followerWalletId {t.follower_wallet_id} holds no position in assetId {t.asset_id}"
            f"{ended}; a sellFraction trigger needs an OPEN one: NO_POSITION (use size for shares)")
    return None


@dataclass(frozen=True, slots=True)
class GroupMember:
    """An ARMED trigger of an OCO group, and the position it guards."""

    id: str
    wallet: str
    follower_wallet_id: str
    asset_id: str


def oco_refusal(t: tpb.Trigger, elsewhere: GroupMember | None) -> ControlError | None:
    """Why ``t`` cannot join its ``ocoGroup`` (None: it can). ``elsewhere``: an ARMED member guarding another
    position. A group is the exits of one position: guard cancels every member when one fires. Another wallet's
    trigger is not named."""
    if elsewhere is None:
        return None
    if (elsewhere.wallet, elsewhere.follower_wallet_id) == (t.wallet, t.follower_wallet_id):
        where = f"assetId {elsewhere.asset_id} (trigger {elsewhere.id})"
    else:
        where = "another wallet"
    return InvalidArgument("ocoGroup", f"{t.oco_group} is armed on another position, in {where}; a group is the "
                                       "exits of one position: use another ocoGroup")


def merge_trigger_patch(current: tpb.Trigger, patch: tpb.Trigger) -> tpb.Trigger:
    """The trigger after a PATCH of its price, trail, activation, size or fraction."""
    if patch.id.strip() and patch.id.strip() != current.id:
        raise InvalidArgument("id", "does not match the trigger addressed")
    for field in IMMUTABLE_FIELDS:
        value = getattr(patch, field)
        if isinstance(value, str):
            value = value.strip().lower() if field == "wallet" else value.strip()
        if value and value != getattr(current, field):
            raise InvalidArgument(json_path(field), "cannot change")
    if patch.state and patch.state != current.state:
        raise InvalidArgument("state", "output only: DELETE cancels a trigger")
    merged = tpb.Trigger()
    merged.CopyFrom(current)
    for field in VALUE_FIELDS:
        if patch.HasField(field):
            setattr(merged, field, getattr(patch, field))
    validate_values(merged)
    merged.high_water_mark = mark_after_patch(merged)
    return merged


def mark_after_patch(merged: tpb.Trigger) -> str:
    """The high-water mark of a PATCHed trigger (canonical values): "0" when it is a trailing stop whose
    activation price is above its mark (the price has not reached the activation price since tracking began: the
    stop is inactive until it does, then trails from there), else the mark as stored."""
    mark = Decimal(merged.high_water_mark or "0")
    if merged.kind == tpb.TRIGGER_KIND_TRAILING_STOP and mark > 0 and Decimal(merged.activation_price) > mark:
        return "0"
    return merged.high_water_mark


def values_equal(a: tpb.Trigger, b: tpb.Trigger) -> bool:
    """True when every changeable value is equal."""
    return all(getattr(a, f) == getattr(b, f) for f in VALUE_FIELDS)


def _is_zero(raw: str) -> bool:
    """Absent ("") or a zero written as the API writes decimals; any other spelling ("٠", " 0", "0_0") is left to the
    strict check, which names the field."""
    return not raw or v.strict_value(raw) == 0


def _required(raw: str, field: str, within: v.Range, kind_name: str) -> str:
    path = json_path(field)
    if _is_zero(raw):
        raise InvalidArgument(path, f"required for {kind_name}: a decimal {within.describe()}")
    return v.canonical(path, raw, within)


def _optional(raw: str, field: str, within: v.Range) -> str:
    return "0" if _is_zero(raw) else v.canonical(json_path(field), raw, within)


def _unused(t: tpb.Trigger, field: str, kind_name: str) -> None:
    if not _is_zero(getattr(t, field)):
        raise InvalidArgument(json_path(field), f'not used by {kind_name}: leave it out or "0"')
    setattr(t, field, "0")
