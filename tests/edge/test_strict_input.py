"""Through real Envoy: addresses are exactly ``0x`` + 40 hex (no trimming), and ``updateMask`` clears a list."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.edge.conftest import EdgeStack, raw_request

pytestmark = pytest.mark.integration

ASSET = "50343297147712368405712938127538102374911265471938208913723189234816304906499"


def address() -> str:
    return "0x" + secrets.token_hex(20)


def subscription(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "followerUserId": "u_123", "followerWalletId": "w_" + secrets.token_hex(4),
        "followerProxy": address(), "leaderProxy": address(), "mode": "EXECUTION_MODE_PAPER",
        "sizing": {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.05"},
    }
    body.update(over)
    return body


@pytest.mark.parametrize("padded", [" {a}", "{a} ", "\t{a}", "{a}\n"])
@pytest.mark.parametrize("field", ["followerProxy", "leaderProxy"])
def test_create_with_a_padded_address_is_400_naming_the_field(edge: EdgeStack, field: str, padded: str) -> None:
    body = subscription()
    body[field] = padded.format(a=address())
    with edge.client() as c:
        reply = c.post("/subscriptions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == 3 and field in reply.json()["message"]


def test_trigger_with_a_padded_wallet_is_400_naming_the_field(edge: EdgeStack) -> None:
    with edge.client() as c:
        reply = c.post("/triggers", json={"wallet": " " + address(), "followerWalletId": "w_456", "assetId": ASSET,
                                          "kind": "TRIGGER_KIND_STOP_LOSS", "triggerPrice": "0.22", "size": "40"})
    assert reply.status_code == 400, reply.text
    assert "wallet" in reply.json()["message"]


@pytest.mark.parametrize(("path", "field"), [
    ("/subscriptions?followerProxy=%20{a}", "followerProxy"),
    ("/subscriptions?followerProxy={a}%20", "followerProxy"),
    ("/subscriptions?followerProxy={b}&leaderProxy=%20{a}", "leaderProxy"),
    ("/triggers?wallet=%20{a}", "wallet"),
])
def test_list_with_a_padded_address_query_is_400_naming_it(edge: EdgeStack, path: str, field: str) -> None:
    status, _, reply = raw_request(edge.envoy.port, "GET", path.format(a=address(), b=address()), edge.auth())
    assert status == 400, reply
    assert reply["code"] == 3 and field in reply["message"]


@pytest.mark.parametrize(("field", "initial"), [("marketDenylist", ["btc-updown-5m"]),
                                                ("marketAllowlist", ["some-market"])])
def test_update_mask_clears_a_list(edge: EdgeStack, field: str, initial: list[str]) -> None:
    """The README's way to empty a list: name it in ``updateMask``; the other filters stay."""
    with edge.client() as c:
        sub = c.post("/subscriptions", json=subscription(filters={field: initial, "minLeaderTradeUsd": "50"})).json()
        assert sub["filters"][field] == initial
        patched = c.patch(f"/subscriptions/{sub['id']}", params={"updateMask": f"filters.{field}"},
                          json={"filters": {field: []}})
        assert patched.status_code == 200, patched.text
        got = c.get(f"/subscriptions/{sub['id']}").json()
    assert patched.json()["filters"][field] == [] and got["filters"][field] == []
    assert got["filters"]["minLeaderTradeUsd"] == "50"


def test_update_mask_clears_the_ladder(edge: EdgeStack) -> None:
    with edge.client() as c:
        sub = c.post("/subscriptions", json=subscription(
            exits={"ladder": [{"gainPct": "20", "sellFraction": "0.5"}], "stopLossPct": "25"})).json()
        patched = c.patch(f"/subscriptions/{sub['id']}", params={"updateMask": "exits.ladder"},
                          json={"exits": {"ladder": []}})
        assert patched.status_code == 200, patched.text
    assert patched.json()["exits"]["ladder"] == [] and patched.json()["exits"]["stopLossPct"] == "25"
