"""Through real Envoy: addresses are exactly ``0x`` + 40 hex (no trimming), ``updateMask`` clears a list, an
unknown JSON field anywhere is 400 naming it, only strict JSON passes, undecodable query values and forged page
tokens are 400."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
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
    """docs/rest-api.md's way to empty a list: name it in ``updateMask``; the other filters stay."""
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


def _sent(edge: EdgeStack, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    status, _, reply = raw_request(edge.envoy.port, method, path, edge.auth(), body)
    return status, reply


def _unknown_field_cases() -> list[tuple[str, str, dict[str, Any], str]]:
    sub, ladder = subscription(), [{"gainPct": "20", "sellFraction": "0.5"}, {"gainPct": "50", "sellFrac": "1"}]
    trigger = {"wallet": address(), "followerWalletId": "w_1", "assetId": ASSET, "kind": "TRIGGER_KIND_STOP_LOSS",
               "triggerPrice": "0.22", "size": "40"}
    return [
        ("POST", "/subscriptions", {**sub, "sizing": {**sub["sizing"], "maxOrderUSD": "10"}}, "sizing.maxOrderUSD"),
        ("POST", "/subscriptions", {**sub, "bogus": 1}, "bogus"),
        ("POST", "/subscriptions", {**sub, "exits": {"ladder": ladder}}, "exits.ladder[1].sellFrac"),
        ("POST", "/subscriptions", {**sub, "filters": {"minPriceUsd": "0.1"}}, "filters.minPriceUsd"),
        ("POST", "/subscriptions", {**sub, "risk": {"max_open_position": 3}}, "risk.max_open_position"),
        ("POST", "/triggers", {**trigger, "triggerPrise": "0.2"}, "triggerPrise"),
        ("PATCH", "/subscriptions/sub_x", {"perf": {"lossStop": "1"}}, "perf.lossStop"),
        ("PATCH", "/triggers/trg_x", {"sizeShares": "1"}, "sizeShares"),
        ("POST", "/subscriptions/sub_x/pause", {"reason": "x", "reasons": "y"}, "reasons"),
        ("POST", "/subscriptions/sub_x/resume", {"force": True}, "force"),
        ("DELETE", "/subscriptions/sub_x", {"hard": True}, "hard"),
        ("GET", "/triggers/trg_x", {"x": 1}, "x"),
    ]


@pytest.mark.parametrize(("method", "path", "body", "field"), _unknown_field_cases())
def test_an_unknown_field_anywhere_in_a_body_is_400_naming_it(edge: EdgeStack, method: str, path: str,
                                                              body: dict[str, Any], field: str) -> None:
    status, reply = _sent(edge, method, path, orjson.dumps(body))
    assert status == 400, reply
    assert reply == {"code": 3, "message": f"{field}: unknown field", "details": []}


def test_a_typo_creates_nothing(edge: EdgeStack) -> None:
    sub = subscription()
    sub["sizing"]["maxOrderUSD"] = "10"
    assert _sent(edge, "POST", "/subscriptions", orjson.dumps(sub))[0] == 400
    status, listed = _sent(edge, "GET", f"/subscriptions?followerProxy={sub['followerProxy']}")
    assert status == 200 and listed["subscriptions"] == []


@pytest.mark.parametrize("body", [
    b'{"sizing": {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25", "max_order_usd": "30"}}',  # proto names
    b'{"sizing": {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25", "\\u006daxOrderUsd": "30"}}',  # escaped
    b' \r\n\t{"sizing": {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25", "maxOrderUsd": "30"}}\n ',
])
def test_known_fields_in_any_spelling_the_transcoder_reads_pass(edge: EdgeStack, body: bytes) -> None:
    sub = subscription()
    sub.pop("sizing")
    merged = orjson.dumps(sub)[:-1] + b"," + body.strip()[1:]
    status, reply = _sent(edge, "POST", "/subscriptions", merged)
    assert status == 200, reply
    assert reply["sizing"]["maxOrderUsd"] == "30"


@pytest.mark.parametrize("body", [
    b'{"label": "x"} trailing', b"{'label': 'x'}", b'{label: "x"}', b'{"label": "x",}', b'{"label": NaN}',
    b'{"filters": {"maxSlippageBps": 01}}', b'{"label": "a\tb"}', b'{"label": "\\x41"}', b'{"label" "x"}',
    b'[' * 70 + b']' * 70,
])
def test_anything_but_strict_json_is_400(edge: EdgeStack, body: bytes) -> None:
    status, reply = _sent(edge, "POST", "/subscriptions", body)
    assert status == 400, reply
    assert reply["code"] == 3 and reply["message"].startswith("body: ")


def test_an_unknown_key_is_shown_printable_and_short(edge: EdgeStack) -> None:
    status, reply = _sent(edge, "POST", "/subscriptions", b'{"a\\u0001' + b"z" * 500 + b'": 1}')
    assert status == 400
    assert reply["message"] == "a?" + "z" * 59 + "...: unknown field"


@pytest.mark.parametrize(("path", "field"), [
    ("/subscriptions?followerProxy=%ED%A0%80", "followerProxy"),  # a UTF-16 surrogate in UTF-8 clothing
    ("/subscriptions?followerProxy=0x6af75d4e4aaf700450efbac3708cce1665810ff1&pageToken=%FF", "pageToken"),
    ("/triggers?wallet=%C0%AF", "wallet"),  # overlong encoding of '/'
    ("/subscriptions/sub_1/fills?pageToken=%E2%82", "pageToken"),  # cut short
])
def test_a_query_value_that_is_not_utf8_is_400_naming_it(edge: EdgeStack, path: str, field: str) -> None:
    status, reply = _sent(edge, "GET", path)
    assert status == 400, reply
    assert reply == {"code": 3, "message": f"{field}: not valid UTF-8", "details": []}


@pytest.mark.parametrize("escape", ["\\udc00", "\\ud800", "\\ud800\\u0041"])
def test_a_lone_surrogate_in_a_body_is_400(edge: EdgeStack, escape: str) -> None:
    status, reply = _sent(edge, "POST", "/subscriptions", orjson.dumps(subscription())[:-1]
                          + b', "label": "' + escape.encode() + b'"}')
    assert status == 400, reply
    assert reply["code"] == 3


def test_page_tokens_are_signed_and_bound_to_their_list(edge: EdgeStack) -> None:
    follower = address()
    with edge.client() as c:
        for _ in range(2):
            assert c.post("/subscriptions", json=subscription(followerProxy=follower)).status_code == 200
        token = c.get("/subscriptions", params={"followerProxy": follower, "pageSize": 1}).json()["nextPageToken"]
        assert token
        payload, mac = token.split(".")
        replies = {
            "forged": c.get("/subscriptions", params={"followerProxy": follower,
                                                      "pageToken": f"{payload}.{'A' * len(mac)}"}),
            "unsigned": c.get("/subscriptions", params={"followerProxy": follower, "pageToken": payload}),
            "other list": c.get("/triggers", params={"wallet": follower, "pageToken": token}),
            "other filters": c.get("/subscriptions", params={"followerProxy": address(), "pageToken": token}),
            "garbage": c.get("/subscriptions", params={"followerProxy": follower, "pageToken": "%%%"}),
        }
        assert c.get("/subscriptions", params={"followerProxy": follower, "pageToken": token}).status_code == 200
    for name, reply in replies.items():
        assert reply.status_code == 400, (name, reply.text)
        assert reply.json()["message"].startswith("pageToken: "), name
