"""Trigger validation: a bad trigger or patch is rejected with a message naming the field."""

from __future__ import annotations

import pytest

from services.control import trigger_rules
from services.control.errors import InvalidArgument
from tests.control.conftest import ASSET, FOLLOWER, trigger
from tests.control.edits import Edit, drop, many, put
from tradingtools.control.v1 import trigger_pb2 as tpb

BAD_TRIGGERS: list[tuple[Edit, str]] = [
    (put("wallet", "0xabc"), 'wallet: must be 0x + 40 hex characters, got "0xabc"'),
    (put("wallet", ""), "wallet: required"),
    (put("follower_wallet_id", ""), "followerWalletId: required"),
    (put("asset_id", ""), "assetId: required"),
    (put("asset_id", "0xabc"), 'assetId: must be a decimal token id, got "0xabc"'),
    (put("kind", 0), "kind: required: one of TRIGGER_KIND_TAKE_PROFIT"),
    (put("kind", 7), "kind: unknown value 7"),
    (put("price_source", 9), "priceSource: unknown value 9"),
    (put("oco_group", "a b"), "ocoGroup: must be printable with no spaces"),
    (put("subscription_id", "s" * 200), "subscriptionId: must be at most 128 characters"),
    (put("follower_wallet_id", "w|1"), "followerWalletId: must contain only letters, digits"),
    (put("follower_wallet_id", "w,1"), "followerWalletId: must contain only letters, digits"),
    (drop("trigger_price"), "triggerPrice: required for TRIGGER_KIND_STOP_LOSS: a decimal in (0, 1)"),
    (put("trigger_price", "0"), "triggerPrice: required for TRIGGER_KIND_STOP_LOSS"),
    (put("trigger_price", "1"), 'triggerPrice: must be a decimal in (0, 1), got "1"'),
    (put("trigger_price", "-0.2"), 'triggerPrice: must be a decimal in (0, 1), got "-0.2"'),
    (put("trigger_price", "cheap"), 'triggerPrice: must be a decimal in (0, 1), got "cheap"'),
    (many(put("kind", tpb.TRIGGER_KIND_TAKE_PROFIT), drop("trigger_price")),
     "triggerPrice: required for TRIGGER_KIND_TAKE_PROFIT"),
    (put("trail_pct", "5"), 'trailPct: not used by TRIGGER_KIND_STOP_LOSS: leave it out or "0"'),
    (put("activation_price", "0.3"), "activationPrice: not used by TRIGGER_KIND_STOP_LOSS"),
    (many(put("kind", tpb.TRIGGER_KIND_TRAILING_STOP), drop("trigger_price")),
     "trailPct: required for TRIGGER_KIND_TRAILING_STOP: a decimal in (0, 100)"),
    (many(put("kind", tpb.TRIGGER_KIND_TRAILING_STOP), drop("trigger_price"), put("trail_pct", "100")),
     'trailPct: must be a decimal in (0, 100), got "100"'),
    (many(put("kind", tpb.TRIGGER_KIND_TRAILING_STOP), put("trail_pct", "10")),
     "triggerPrice: not used by TRIGGER_KIND_TRAILING_STOP"),
    (many(put("kind", tpb.TRIGGER_KIND_TRAILING_STOP), drop("trigger_price"), put("trail_pct", "10"),
           put("activation_price", "1.2")), 'activationPrice: must be a decimal in (0, 1), got "1.2"'),
    (put("sell_fraction", "0.5"), "size: exactly one of size and sellFraction may be non-zero"),
    (put("size", "0"), "sellFraction: required: exactly one of size (shares) and sellFraction"),
    (drop("size"), "sellFraction: required"),
    (put("size", "-1"), 'size: must be a decimal >= 0.01, got "-1"'),
    (many(drop("size"), put("sell_fraction", "1.5")), 'sellFraction: must be a decimal in (0, 1], got "1.5"'),
]


@pytest.mark.parametrize(("edit", "message"), BAD_TRIGGERS)
def test_bad_trigger_is_rejected_naming_the_field(edit: Edit, message: str) -> None:
    raw = trigger()
    edit(raw)
    with pytest.raises(InvalidArgument) as err:
        trigger_rules.new_trigger(raw)
    assert err.value.message.startswith(message), err.value.message


def test_new_trigger_defaults_and_canonical_values() -> None:
    t = trigger_rules.new_trigger(trigger(wallet=FOLLOWER.upper().replace("0X", "0x"), trigger_price="0.220"))
    assert (t.wallet, t.trigger_price, t.trail_pct, t.activation_price, t.size, t.sell_fraction) == (
        FOLLOWER, "0.22", "0", "0", "10", "0")
    assert (t.price_source, t.source, t.high_water_mark) == (tpb.PRICE_SOURCE_BEST_BID, tpb.TRIGGER_SOURCE_MANUAL, "0")
    trailing = trigger_rules.new_trigger(tpb.Trigger(
        wallet=FOLLOWER, follower_wallet_id="w", asset_id=ASSET, kind=tpb.TRIGGER_KIND_TRAILING_STOP,
        trail_pct="10", activation_price="0.4", sell_fraction="1", source=tpb.TRIGGER_SOURCE_COPY))
    assert (trailing.trail_pct, trailing.activation_price, trailing.sell_fraction, trailing.trigger_price) == (
        "10", "0.4", "1", "0")
    assert trailing.source == tpb.TRIGGER_SOURCE_MANUAL  # output only: a caller cannot pose as guard's exits


@pytest.mark.parametrize(("patch", "message"), [
    (tpb.Trigger(wallet="0x" + "2" * 40), "wallet: cannot change"),
    (tpb.Trigger(kind=tpb.TRIGGER_KIND_TAKE_PROFIT), "kind: cannot change"),
    (tpb.Trigger(asset_id="1"), "assetId: cannot change"),
    (tpb.Trigger(oco_group="g2"), "ocoGroup: cannot change"),
    (tpb.Trigger(state=tpb.TRIGGER_STATE_CANCELLED), "state: output only"),
    (tpb.Trigger(sell_fraction="0.5"), "size: exactly one of size and sellFraction"),
    (tpb.Trigger(trigger_price="2"), "triggerPrice: must be a decimal in (0, 1)"),
])
def test_bad_trigger_patch(patch: tpb.Trigger, message: str) -> None:
    current = trigger_rules.new_trigger(trigger())
    current.id, current.state = "trg_1", tpb.TRIGGER_STATE_ARMED
    with pytest.raises(InvalidArgument) as err:
        trigger_rules.merge_trigger_patch(current, patch)
    assert err.value.message.startswith(message), err.value.message


def test_trigger_patch_switches_size_to_fraction() -> None:
    current = trigger_rules.new_trigger(trigger())
    merged = trigger_rules.merge_trigger_patch(current, tpb.Trigger(size="0", sell_fraction="0.5",
                                                                    trigger_price="0.2", wallet=FOLLOWER))
    assert (merged.size, merged.sell_fraction, merged.trigger_price) == ("0", "0.5", "0.2")
    assert not trigger_rules.values_equal(merged, current)
