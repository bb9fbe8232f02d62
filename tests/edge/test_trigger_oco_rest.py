"""Through real Envoy: an OCO group is the exits of one position; joining a group armed on another position is 400
naming ``ocoGroup``, and nothing is created."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.edge.conftest import EdgeStack

ASSET = "50343297147712368405712938127538102374911265471938208913723189234816304906499"
OTHER_ASSET = "7" * 70


def body(wallet: str, wallet_id: str, asset: str, group: str, **extra: Any) -> dict[str, Any]:
    return {"wallet": wallet, "followerWalletId": wallet_id, "assetId": asset, "kind": "TRIGGER_KIND_STOP_LOSS",
            "triggerPrice": "0.22", "size": "40", "ocoGroup": group, **extra}


@pytest.mark.integration
def test_rest_trigger_joining_a_group_armed_on_another_position_is_400(edge: EdgeStack) -> None:
    wallet, wallet_id, group = "0x" + secrets.token_hex(20), "w_" + secrets.token_hex(4), "grp_" + secrets.token_hex(6)
    other_wallet, other_id = "0x" + secrets.token_hex(20), "w_" + secrets.token_hex(4)
    with edge.client() as c:
        first = c.post("/triggers", json=body(wallet, wallet_id, ASSET, group))
        assert first.status_code == 200, first.text
        take = c.post("/triggers", json=body(wallet.upper().replace("0X", "0x"), wallet_id, ASSET, group,
                                             kind="TRIGGER_KIND_TAKE_PROFIT", triggerPrice="0.8"))
        assert take.status_code == 200, take.text
        for other in (body(wallet, wallet_id, OTHER_ASSET, group), body(other_wallet, other_id, ASSET, group)):
            refused = c.post("/triggers", json=other)
            assert refused.status_code == 400, refused.text
            assert refused.json()["message"].startswith(f"ocoGroup: {group} is armed on another position, in ")
        listed = [c.get("/triggers", params={"wallet": w}).json()["triggers"] for w in (wallet, other_wallet)]
    assert [t["id"] for t in listed[0]] == [first.json()["id"], take.json()["id"]] and listed[1] == []
