"""Through real Envoy: each route takes only its own query parameters (docs/rest-api.md). The transcoder binds a
query parameter to any field of the request message, after the path and the body, so ``?id=`` would retarget a
route at another resource and ``?subscription.sizing.ratio=`` would set a body field past the strict body check;
any parameter that is not one of the route's own is a 400 naming it."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from tests.edge.conftest import EdgeStack, raw_request

pytestmark = pytest.mark.integration

ASSET = "50343297147712368405712938127538102374911265471938208913723189234816304906499"


def _address() -> str:
    return "0x" + secrets.token_hex(20)


def _send(edge: EdgeStack, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    raw = orjson.dumps(body) if body is not None else None
    status, _, reply = raw_request(edge.envoy.port, method, path, edge.auth(), raw)
    return status, reply


def _subscription(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "followerUserId": "u_1", "followerWalletId": "w_" + secrets.token_hex(4), "followerProxy": _address(),
        "leaderProxy": _address(), "mode": "EXECUTION_MODE_PAPER", "label": "orig",
        "sizing": {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.05"}, "filters": {"copySells": True},
    }
    body.update(over)
    return body


def _new_subscription(edge: EdgeStack, **over: Any) -> dict[str, Any]:
    status, reply = _send(edge, "POST", "/subscriptions", _subscription(**over))
    assert status == 200, reply
    return dict(reply)


def _new_trigger(edge: EdgeStack) -> dict[str, Any]:
    status, reply = _send(edge, "POST", "/triggers", {
        "wallet": _address(), "followerWalletId": "w_q", "assetId": ASSET, "kind": "TRIGGER_KIND_STOP_LOSS",
        "triggerPrice": "0.22", "size": "40"})
    assert status == 200, reply
    return dict(reply)


def _unknown(name: str) -> dict[str, Any]:
    return {"code": 3, "message": f"{name}: unknown query parameter", "details": []}


@pytest.mark.parametrize(("method", "suffix", "body", "name"), [
    ("GET", "?id={b}", None, "id"),
    ("DELETE", "?id={b}", None, "id"),
    ("POST", "/pause?id={b}", {}, "id"),
    ("POST", "/pause?%69d={b}", {}, "id"),
    ("POST", "/resume?id={b}", {}, "id"),
    ("GET", "/fills?id={b}", None, "id"),
    ("GET", "/positions?pageSize=5&id={b}", None, "id"),
    ("PATCH", "?id={b}", {"label": "x"}, "id"),
])
def test_a_path_id_given_again_in_the_query_is_refused_and_leaves_the_other_alone(
        edge: EdgeStack, method: str, suffix: str, body: dict[str, Any] | None, name: str) -> None:
    a, b = _new_subscription(edge), _new_subscription(edge)
    status, reply = _send(edge, method, f"/subscriptions/{a['id']}{suffix.format(b=b['id'])}", body)
    assert (status, reply) == (400, _unknown(name))
    status, after = _send(edge, "GET", f"/subscriptions/{b['id']}")
    assert status == 200, after
    assert (after["state"], after["label"]) == ("SUBSCRIPTION_STATE_ACTIVE", "orig")


@pytest.mark.parametrize(("query", "name"), [
    ("subscription.sizing.ratio=5", "subscription.sizing.ratio"),
    ("subscription.filters.copySells=no", "subscription.filters.copySells"),
    ("subscription.filters.copy_sells=0", "subscription.filters.copy_sells"),
    ("subscription.label=evil", "subscription.label"),
    ("updateMask=label&subscription.label=evil", "subscription.label"),
    ("subscription%2Elabel=evil", "subscription.label"),
])
def test_a_body_field_cannot_be_set_through_the_patch_query(edge: EdgeStack, query: str, name: str) -> None:
    a = _new_subscription(edge)
    status, reply = _send(edge, "PATCH", f"/subscriptions/{a['id']}?{query}", {})
    assert (status, reply) == (400, _unknown(name))
    _, after = _send(edge, "GET", f"/subscriptions/{a['id']}")
    assert (after["sizing"]["ratio"], after["filters"]["copySells"], after["label"]) == ("0.05", True, "orig")


def test_a_create_field_cannot_be_set_through_the_query(edge: EdgeStack) -> None:
    body = _subscription()
    status, reply = _send(edge, "POST", "/subscriptions?subscription.filters.copySells=no", body)
    assert (status, reply) == (400, _unknown("subscription.filters.copySells"))
    _, listed = _send(edge, "GET", f"/subscriptions?followerProxy={body['followerProxy']}")
    assert listed["subscriptions"] == []


def test_a_pause_reason_cannot_come_through_the_query(edge: EdgeStack) -> None:
    a = _new_subscription(edge)
    status, reply = _send(edge, "POST", f"/subscriptions/{a['id']}/pause?reason=x", {})
    assert (status, reply) == (400, _unknown("reason"))
    _, after = _send(edge, "GET", f"/subscriptions/{a['id']}")
    assert after["state"] == "SUBSCRIPTION_STATE_ACTIVE"


@pytest.mark.parametrize(("method", "suffix", "body", "name"), [
    ("GET", "?id={u}", None, "id"),
    ("DELETE", "?id={u}", None, "id"),
    ("PATCH", "?id={u}", {"triggerPrice": "0.3"}, "id"),
    ("PATCH", "?trigger.triggerPrice=0.5", {}, "trigger.triggerPrice"),
    ("PATCH", "?trigger.trigger_price=0.5", {}, "trigger.trigger_price"),
])
def test_trigger_routes_take_no_query(edge: EdgeStack, method: str, suffix: str, body: dict[str, Any] | None,
                                      name: str) -> None:
    t, u = _new_trigger(edge), _new_trigger(edge)
    status, reply = _send(edge, method, f"/triggers/{t['id']}{suffix.format(u=u['id'])}", body)
    assert (status, reply) == (400, _unknown(name))
    for trigger in (t, u):
        _, after = _send(edge, "GET", f"/triggers/{trigger['id']}")
        assert (after["state"], after["triggerPrice"]) == ("TRIGGER_STATE_ARMED", "0.22")


@pytest.mark.parametrize("query", ["FollowerProxy={a}&followerProxy={b}", "followerProxy={a}&x", "followerProxy={a}&=1",
                                   "followerProxy={a}&pageSize=1&subscriptions=1", "%66ollowerProxy={a}&id=1"])
def test_a_list_refuses_a_parameter_it_does_not_take(edge: EdgeStack, query: str) -> None:
    status, reply = _send(edge, "GET", "/subscriptions?" + query.format(a=_address(), b=_address()))
    assert status == 400, reply
    assert reply["message"].endswith(": unknown query parameter")


@pytest.mark.parametrize("path", [
    "/subscriptions?followerProxy={f}&leaderProxy=&pageToken=",
    "/subscriptions?followerProxy={f}&&pageSize=5&",
    "/subscriptions?follower_proxy={f}&page_size=5&state=SUBSCRIPTION_STATE_ACTIVE",
    "/subscriptions?state=SUBSCRIPTION_STATE_ACTIVE&pageSize=5&followerProxy={f}",
    "/subscriptions?followerProxy={f}&leaderProxy=%30x" + "a" * 40,
    "/subscriptions?followerProxy={f}&page%5Fsize=5&pageToken",
    "/triggers?wallet={f}&state=TRIGGER_STATE_ARMED&page_token=",
    "/positions?wallet={f}&pageSize=5",
    "/subscriptions/{s}/fills?pageSize=5&page_token=",
    "/subscriptions/{s}/positions?state=POSITION_STATE_OPEN&pageSize=5",
    "/subscriptions/{s}",
    "/health",
])
def test_a_route_own_parameters_pass_in_any_spelling(edge: EdgeStack, path: str) -> None:
    sub = _new_subscription(edge)
    status, reply = _send(edge, "GET", path.format(f=_address(), s=sub["id"]))
    assert status == 200, reply


@pytest.mark.parametrize("mask", ["updateMask=filters.marketDenylist,label", "update_mask=filters.marketDenylist",
                                  "update%5Fmask=label"])
def test_patch_takes_its_update_mask(edge: EdgeStack, mask: str) -> None:
    sub = _new_subscription(edge, filters={"marketDenylist": ["a"]})
    status, reply = _send(edge, "PATCH", f"/subscriptions/{sub['id']}?{mask}",
                          {"filters": {"marketDenylist": []}, "label": "x"})
    assert status == 200, reply


def test_a_page_token_round_trips_raw_and_percent_encoded(edge: EdgeStack) -> None:
    follower = _address()
    for _ in range(3):
        _new_subscription(edge, followerProxy=follower)
    status, page = _send(edge, "GET", f"/subscriptions?followerProxy={follower}&pageSize=1")
    assert status == 200, page
    token = page["nextPageToken"]
    for sent in (token, quote(token, safe="")):
        status, reply = _send(edge, "GET", f"/subscriptions?pageSize=1&pageToken={sent}&followerProxy={follower}")
        assert status == 200, (sent, reply)
