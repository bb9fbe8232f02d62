"""Which positions a trigger may guard (pure rule): any OPEN one, whatever its origin; none whose market
resolved; a sellFraction needs shares held now."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.control.trigger_rules import HeldPosition, position_refusal
from tradingtools.control.v1 import trigger_pb2 as tpb

ASSET = "123"


def trigger(*, size: str = "0", fraction: str = "0") -> tpb.Trigger:
    return tpb.Trigger(follower_wallet_id="w_456", asset_id=ASSET, size=size, sell_fraction=fraction)


@pytest.mark.parametrize(("pos", "size", "fraction", "refused"), [
    (HeldPosition("OPEN", Decimal("714.28")), "0", "1", None),  # copied, manual or external alike
    (HeldPosition("OPEN", Decimal("714.28")), "10", "0", None),
    (None, "10", "0", None),  # shares may come later: guard cancels it (NO_POSITION) if none are held then
    (None, "0", "0.5", "sellFraction: followerWalletId w_456 holds no position in assetId 123; "),
    (HeldPosition("OPEN", Decimal("0.004")), "0", "0.5", "sellFraction: "),  # less than one share step
    (HeldPosition("CLOSED", Decimal(0)), "10", "0", None),
    (HeldPosition("CLOSED", Decimal(0)), "0", "1",
     "sellFraction: followerWalletId w_456 holds no position in assetId 123 (its last position there is "
     "POSITION_STATE_CLOSED)"),
    (HeldPosition("RESOLVED_WON", Decimal(0)), "10", "0", "assetId: MARKET_RESOLVED: "),
    (HeldPosition("RESOLVED_LOST", Decimal(0)), "0", "1", "assetId: MARKET_RESOLVED: "),
    (HeldPosition("REDEEMED", Decimal(0)), "10", "0", "assetId: MARKET_RESOLVED: "),
])
def test_position_refusal(pos: HeldPosition | None, size: str, fraction: str, refused: str | None) -> None:
    got = position_refusal(trigger(size=size, fraction=fraction), pos)
    if refused is None:
        assert got is None
    else:
        assert got is not None and got.message.startswith(refused), got and got.message


A, B = "0x" + "a" * 40, "0x" + "b" * 40


@pytest.mark.parametrize(("held_in", "wallet", "refused"), [
    (A, A, None),
    (A.upper().replace("0X", "0x"), A, None),  # stored in another case: the same wallet
    ("", A, None),  # a position whose wallet is not recorded
    (B, A, f"wallet: followerWalletId w_456 holds assetId 123 in wallet {B}, not in {A}"),
])
def test_a_trigger_guards_only_the_position_of_its_own_wallet(held_in: str, wallet: str, refused: str | None) -> None:
    """Its SELL goes out under ``wallet``: for another wallet's shares of followerWalletId it would sell under the
    wrong proxy (the subscription check does not run for a trigger with no subscriptionId)."""
    t = trigger(size="10")
    t.wallet = wallet
    got = position_refusal(t, HeldPosition("OPEN", Decimal("714.28"), held_in))
    if refused is None:
        assert got is None
    else:
        assert got is not None and got.message == refused
