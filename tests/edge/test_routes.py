"""Every REST route through Envoy: status, JSON shape (lowerCamelCase, enum names, decimal strings)."""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from tests.edge.conftest import EdgeStack, raw_request
from tests.helpers import eventually_sync

pytestmark = pytest.mark.integration

ASSET = "50343297147712368405712938127538102374911265471938208913723189234816304906499"
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def address() -> str:
    return "0x" + secrets.token_hex(20)


def sub_body(follower: str | None = None, leader: str | None = None, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "followerUserId": "u_123", "followerWalletId": "w_456",
        "followerProxy": follower or address(), "leaderProxy": leader or address(),
        "label": "sports whale", "mode": "EXECUTION_MODE_PAPER",
        "sizing": {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.05", "minOrderUsd": "1",
                   "maxOrderUsd": "250"},
        "filters": {"minPrice": "0.05", "maxPrice": "0.95", "marketDenylist": ["btc-updown-5m"],
                    "copySells": True, "maxSlippageBps": 200},
        "risk": {"maxMarketExposureUsd": "500", "maxTotalExposureUsd": "2000", "maxOpenPositions": 20},
        "exits": {"takeProfitPct": "40", "stopLossPct": "25",
                  "ladder": [{"gainPct": "20", "sellFraction": "0.5"}]},
        "perf": {"lossStopUsd": "400"},
    }
    body.update(over)
    return body


def keys_are_camel(value: Any) -> bool:
    """Every key at every depth is lowerCamelCase."""
    if isinstance(value, dict):
        return all(CAMEL.match(k) and keys_are_camel(v) for k, v in value.items())
    if isinstance(value, list):
        return all(keys_are_camel(v) for v in value)
    return True


def test_subscription_routes(edge: EdgeStack) -> None:
    follower = address()
    with edge.client() as c:
        created = c.post("/subscriptions", json=sub_body(follower=follower.upper().replace("0X", "0x")))
        assert created.status_code == 200, created.text
        assert created.headers["content-type"] == "application/json"
        sub = created.json()
        assert keys_are_camel(sub)
        assert sub["id"].startswith("sub_")
        assert sub["followerProxy"] == follower
        assert sub["state"] == "SUBSCRIPTION_STATE_ACTIVE"
        assert sub["mode"] == "EXECUTION_MODE_PAPER"
        assert sub["sizing"]["mode"] == "SIZING_MODE_PROPORTIONAL"
        assert sub["sizing"]["ratio"] == "0.05" and sub["risk"]["maxTotalExposureUsd"] == "2000"
        assert sub["exits"]["ladder"] == [{"gainPct": "20", "sellFraction": "0.5"}]
        assert sub["filters"]["maxSlippageBps"] == 200 and sub["filters"]["copySells"] is True
        assert isinstance(sub["stats"]["copied"], str)  # int64 is a string in proto3 JSON
        assert sub["pausedReason"] == ""  # primitive fields always printed
        assert sub["createTime"].endswith("Z")

        got = c.get(f"/subscriptions/{sub['id']}")
        assert got.status_code == 200 and got.json() == sub

        listed = c.get("/subscriptions", params={"followerProxy": follower})
        assert listed.status_code == 200
        assert listed.json() == {"subscriptions": [sub], "nextPageToken": ""}

        fills = c.get(f"/subscriptions/{sub['id']}/fills")
        assert fills.status_code == 200 and fills.json() == {"fills": [], "nextPageToken": ""}

        patched = c.patch(f"/subscriptions/{sub['id']}", json={"label": "renamed", "sizing": {"ratio": "0.1"}})
        assert patched.status_code == 200, patched.text
        assert patched.json()["label"] == "renamed" and patched.json()["sizing"]["ratio"] == "0.1"

        paused = c.post(f"/subscriptions/{sub['id']}/pause", json={"reason": "holiday"})
        assert paused.status_code == 200, paused.text
        assert paused.json()["state"] == "SUBSCRIPTION_STATE_PAUSED"
        assert paused.json()["pausedReason"] == "holiday"

        resumed = c.post(f"/subscriptions/{sub['id']}/resume", json={})
        assert resumed.status_code == 200 and resumed.json()["state"] == "SUBSCRIPTION_STATE_ACTIVE"

        deleted = c.delete(f"/subscriptions/{sub['id']}")
        assert deleted.status_code == 200 and deleted.json() == {}
        assert c.get(f"/subscriptions/{sub['id']}").json()["state"] == "SUBSCRIPTION_STATE_STOPPED"

        refused = c.post(f"/subscriptions/{sub['id']}/pause", json={})
        assert refused.status_code == 400
        assert refused.json()["code"] == 9  # FAILED_PRECONDITION


def test_trigger_routes(edge: EdgeStack) -> None:
    wallet = address()
    with edge.client() as c:
        created = c.post("/triggers", json={
            "wallet": wallet, "followerWalletId": "w_456", "assetId": ASSET,
            "kind": "TRIGGER_KIND_STOP_LOSS", "triggerPrice": "0.22", "size": "40"})
        assert created.status_code == 200, created.text
        trg = created.json()
        assert keys_are_camel(trg)
        assert trg["id"].startswith("trg_") and trg["state"] == "TRIGGER_STATE_ARMED"
        assert trg["kind"] == "TRIGGER_KIND_STOP_LOSS" and trg["priceSource"] == "PRICE_SOURCE_BEST_BID"
        assert (trg["triggerPrice"], trg["size"], trg["sellFraction"]) == ("0.22", "40", "0")
        assert trg["assetId"] == ASSET

        assert c.get(f"/triggers/{trg['id']}").json() == trg
        listed = c.get("/triggers", params={"wallet": wallet})
        assert listed.status_code == 200 and listed.json() == {"triggers": [trg], "nextPageToken": ""}

        moved = c.patch(f"/triggers/{trg['id']}", json={"triggerPrice": "0.2"})
        assert moved.status_code == 200, moved.text
        assert moved.json()["triggerPrice"] == "0.2"

        deleted = c.delete(f"/triggers/{trg['id']}")
        assert deleted.status_code == 200 and deleted.json() == {}
        assert c.get(f"/triggers/{trg['id']}").json()["state"] == "TRIGGER_STATE_CANCELLED"
        late = c.patch(f"/triggers/{trg['id']}", json={"triggerPrice": "0.3"})
        assert late.status_code == 400 and late.json()["code"] == 9


@pytest.mark.parametrize("path", ["/subscriptions/sub_01JD3X6Q8Z5V7K2M4N6P8R0T2V", "/triggers/trg_nope",
                                  "/subscriptions/sub_01JD3X6Q8Z5V7K2M4N6P8R0T2V/fills"])
def test_unknown_ids_are_404(edge: EdgeStack, path: str) -> None:
    with edge.client() as c:
        reply = c.get(path)
    assert reply.status_code == 404
    assert reply.json()["code"] == 5 and reply.json()["message"]


def test_second_active_subscription_is_409(edge: EdgeStack) -> None:
    follower, leader = address(), address()
    with edge.client() as c:
        assert c.post("/subscriptions", json=sub_body(follower, leader)).status_code == 200
        again = c.post("/subscriptions", json=sub_body(follower, leader))
    assert again.status_code == 409
    assert again.json()["code"] == 6


def test_idempotency_key_replays_the_first_answer(edge: EdgeStack) -> None:
    follower = address()
    key = f"k-{secrets.token_hex(8)}"
    body = sub_body(follower)
    with edge.client() as c:
        first = c.post("/subscriptions", json=body, headers={"Idempotency-Key": key})
        second = c.post("/subscriptions", json=body, headers={"Idempotency-Key": key})
        listed = c.get("/subscriptions", params={"followerProxy": follower}).json()
    assert first.status_code == second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert len(listed["subscriptions"]) == 1


def test_pagination_across_pages(edge: EdgeStack) -> None:
    follower = address()
    with edge.client() as c:
        ids = [c.post("/subscriptions", json=sub_body(follower)).json()["id"] for _ in range(3)]
        page1 = c.get("/subscriptions", params={"followerProxy": follower, "pageSize": 2}).json()
        assert len(page1["subscriptions"]) == 2 and page1["nextPageToken"]
        page2 = c.get("/subscriptions", params={"followerProxy": follower, "pageSize": 2,
                                                "pageToken": page1["nextPageToken"]}).json()
    assert page2["nextPageToken"] == ""
    assert [s["id"] for s in page1["subscriptions"] + page2["subscriptions"]] == ids


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"followerProxy": ', None),
        (b"[1, 2]", None),
        (b'{"followerProxy": 12}', "follower_proxy"),
        (b'{"filters": {"maxSlippageBps": "lots"}}', "max_slippage_bps"),
        (b'{"filters": {"copySells": "banana"}}', "filters.copySells"),
        (b'{"filters": {"maxSlippageBps": 1.5}}', "max_slippage_bps"),
        (b'{"sizing": {"fixedUsd": 5}}', "fixed_usd"),
        (b'{"label": {"a": 1}}', "label"),
        (b'{"mode": "EXECUTION_MODE_NOPE"}', "mode"),
        (b'{"sizing": {"mode": "FIXED"}}', "sizing.mode"),
        (b'{"exits": {"ladder": "x"}}', "exits.ladder"),
        (b'{"exits": {"ladder": [1]}}', "exits.ladder[0]"),
    ],
)
def test_malformed_json_is_400_naming_the_field(edge: EdgeStack, body: bytes, field: str | None) -> None:
    status, headers, reply = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(), body)
    assert status == 400, reply
    assert headers["content-type"] == "application/json"
    assert reply["code"] == 3 and reply["message"]
    if field is not None:
        assert field in reply["message"]


def test_service_validation_is_400_naming_the_field(edge: EdgeStack) -> None:
    with edge.client() as c:
        reply = c.post("/subscriptions", json=sub_body(leader="0x1234"))
    assert reply.status_code == 400
    assert reply.json()["code"] == 3
    assert "leaderProxy" in reply.json()["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("pageSize=abc", "page_size"), ("state=SUBSCRIPTION_STATE_BOGUS", "state"), ("nope=1", "nope")],
)
def test_bad_query_parameters_are_400(edge: EdgeStack, query: str, field: str) -> None:
    status, _, reply = raw_request(edge.envoy.port, "GET", f"/subscriptions?followerProxy={address()}&{query}",
                                   edge.auth())
    assert status == 400, reply
    assert field in reply["message"]


def test_body_over_64_kib_is_413_and_just_under_is_not(edge: EdgeStack) -> None:
    big = b'{"label": "' + b"x" * (64 * 1024) + b'"}'
    status, _, reply = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(), big)
    assert status == 413
    assert reply["code"] == 3 and "65536" in reply["message"]
    fits = b'{"label": "' + b"x" * (64 * 1024 - 20) + b'"}'
    status, _, _ = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(), fits)
    assert status == 400  # reaches the service, which refuses the body for what it says


def test_access_log_is_json_without_the_token(edge: EdgeStack) -> None:
    follower = address()
    with edge.client() as c:
        c.get(f"/subscriptions?followerProxy={follower}", headers={"Idempotency-Key": "k-log"})

    def logged() -> list[dict[str, Any]]:
        lines = edge.envoy.access_entries()
        return [e for e in lines if follower in (e.get("path") or "")]

    entry = eventually_sync(logged, message="access log line")[0]
    assert entry["status"] == 200 and entry["method"] == "GET" and entry["idempotency_key"] == "k-log"
    assert entry["grpc_method"] == "/tradingtools.control.v1.SubscriptionService/ListSubscriptionsJson"
    assert edge.tokens[0] not in edge.envoy.access_log.read_text()
