"""Through real Envoy: a trigger's zero spelt in another script's digits is 400 naming the field (it was created)."""

from __future__ import annotations

import secrets

import pytest

from tests.edge.conftest import EdgeStack

ASSET = "50343297147712368405712938127538102374911265471938208913723189234816304906499"


@pytest.mark.integration
def test_rest_trigger_with_an_arabic_indic_zero_fraction_is_400(edge: EdgeStack) -> None:
    body = {"wallet": "0x" + secrets.token_hex(20), "followerWalletId": "w_" + secrets.token_hex(4),
            "assetId": ASSET, "kind": "TRIGGER_KIND_STOP_LOSS", "triggerPrice": "0.22", "size": "40",
            "sellFraction": "٠"}
    with edge.client() as c:
        reply = c.post("/triggers", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["message"].startswith("sellFraction")
