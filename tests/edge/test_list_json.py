"""GET /subscriptions through real Envoy: the body control prints (ListSubscriptionsJson, HttpBody) is
what the transcoder printed before the route moved, and its errors are the transcoder's as ever."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import orjson
import pytest

from tests.edge.conftest import EdgeStack, raw_request

pytestmark = pytest.mark.integration


def address() -> str:
    return "0x" + secrets.token_hex(20)


def bodies(follower: str) -> list[dict[str, Any]]:
    """Varied subscriptions: every sizing mode, unset optionals, zero values, unicode, < and >."""
    base = {"followerUserId": "u_1", "followerProxy": follower, "mode": "EXECUTION_MODE_PAPER"}
    return [
        {**base, "followerWalletId": "w1", "leaderProxy": address(),
         "sizing": {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25"}},
        {**base, "followerUserId": "\u00fc\u2713", "followerWalletId": "w2", "leaderProxy": address(),
         "label": "\u65e5\u672c\u8a9e <tag> & \"q\" \\ \u2602 \U0001f600 /",
         "sizing": {"mode": "SIZING_MODE_PERCENT_OF_BALANCE", "percentOfBalance": "2"},
         "filters": {"copySells": False, "maxSlippageBps": 0, "marketAllowlist": ["a", "b"]},
         "risk": {"maxOpenPositions": 0, "maxMarketExposureUsd": "0"},
         "exits": {"ladder": [{"gainPct": "20", "sellFraction": "0.5"}]}, "perf": {"lossStopUsd": "0"}},
        {**base, "followerWalletId": "w3", "leaderProxy": address(), "label": "",
         "sizing": {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.05", "minOrderUsd": "1", "maxOrderUsd": "250"},
         "filters": {"minPrice": "0.05", "maxPrice": "0.95", "minLeaderTradeUsd": "50",
                     "marketDenylist": ["btc-updown-5m"], "copySells": True, "maxSlippageBps": 200},
         "risk": {"maxMarketExposureUsd": "500", "maxTotalExposureUsd": "2000", "maxOpenPositions": 20,
                  "dailyLossLimitUsd": "300"},
         "exits": {"takeProfitPct": "40", "stopLossPct": "25", "trailingStopPct": "0",
                   "ladder": [{"gainPct": "20", "sellFraction": "0.5"}, {"gainPct": "50", "sellFraction": "1"}]},
         "perf": {"lossStopUsd": "400", "profitScaleAtUsd": "1000", "profitScaleMultiplier": "1.5"}},
        {**base, "followerWalletId": "w4", "leaderProxy": address(), "label": "plain",
         "sizing": {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "0.5", "maxOrderUsd": "10"}},
    ]


def envelope(items: list[bytes], token: str = "") -> bytes:
    return b'{"subscriptions":[' + b",".join(items) + b'],"nextPageToken":"' + token.encode() + b'"}'


@pytest.fixture(scope="module")
def listed(edge: EdgeStack) -> tuple[str, list[str]]:
    """A follower with four varied subscriptions, one PAUSED and one STOPPED."""
    follower = address()
    with edge.client() as c:
        ids = []
        for body in bodies(follower):
            created = c.post("/subscriptions", json=body)
            assert created.status_code == 200, created.text
            ids.append(created.json()["id"])
        assert c.post(f"/subscriptions/{ids[1]}/pause", json={"reason": "holiday \u2602"}).status_code == 200
        assert c.delete(f"/subscriptions/{ids[2]}").status_code == 200
    return follower, ids


def _gets(c: httpx.Client, ids: list[str]) -> list[bytes]:
    """Each subscription as the transcoder prints it (GET /subscriptions/{id} still goes through it)."""
    out = []
    for sub_id in ids:
        got = c.get(f"/subscriptions/{sub_id}")
        assert got.status_code == 200
        out.append(got.content)
    return out


def test_list_body_is_byte_for_byte_what_the_transcoder_prints(edge: EdgeStack,
                                                               listed: tuple[str, list[str]]) -> None:
    follower, ids = listed
    with edge.client() as c:
        for _ in range(2):  # first read fills control's cache, the second is served from it
            reply = c.get("/subscriptions", params={"followerProxy": follower})
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "application/json"
            assert reply.content == envelope(_gets(c, ids))
        paused = c.get("/subscriptions", params={"followerProxy": follower, "state": "SUBSCRIPTION_STATE_PAUSED"})
        assert paused.content == envelope(_gets(c, ids[1:2]))
        leader = c.get(f"/subscriptions/{ids[0]}").json()["leaderProxy"]
        one = c.get("/subscriptions", params={"followerProxy": follower.upper().replace("0X", "0x"),
                                              "leaderProxy": leader.upper().replace("0X", "0x")})
        assert one.content == envelope(_gets(c, ids[:1]))
        other = c.get("/subscriptions", params={"followerProxy": follower, "leaderProxy": address()})
        assert other.content == b'{"subscriptions":[],"nextPageToken":""}'
        empty = c.get("/subscriptions", params={"follower_proxy": address()})  # snake_case binds too
        assert empty.content == b'{"subscriptions":[],"nextPageToken":""}'


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "x-gzip;q=0.5", "*"])
def test_a_kept_page_goes_out_gzipped_to_a_client_that_accepts_it(edge: EdgeStack, listed: tuple[str, list[str]],
                                                                    accept: str) -> None:
    follower, ids = listed
    with edge.client() as c:
        expected = envelope(_gets(c, ids))
        for _ in range(3):  # built (sent as it is), then kept: compressed once, then sent from the cache
            reply = c.get("/subscriptions", params={"followerProxy": follower}, headers={"Accept-Encoding": accept})
            assert reply.status_code == 200 and reply.content == expected  # httpx inflates it
        assert reply.headers["content-encoding"] == "gzip" and reply.headers["vary"] == "accept-encoding"
        assert reply.headers["content-type"] == "application/json"
        assert int(reply.headers["content-length"]) < len(expected)


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "deflate, br", "*;q=0"])
def test_a_client_that_does_not_accept_gzip_gets_the_page_as_it_is(edge: EdgeStack, listed: tuple[str, list[str]],
                                                                    accept: str | None) -> None:
    follower, ids = listed
    headers = edge.auth() | ({"Accept-Encoding": accept} if accept is not None else {})
    for _ in range(3):
        status, got, body = raw_request(edge.envoy.port, "GET", f"/subscriptions?followerProxy={follower}", headers)
        assert status == 200 and "content-encoding" not in got
    with edge.client() as c:
        assert body == orjson.loads(envelope(_gets(c, ids)))


def test_pages_and_tokens_through_the_edge(edge: EdgeStack, listed: tuple[str, list[str]]) -> None:
    follower, ids = listed
    with edge.client() as c:
        first = c.get("/subscriptions", params={"followerProxy": follower, "pageSize": 3})
        token = first.json()["nextPageToken"]
        assert token and first.content == envelope(_gets(c, ids[:3]), token)
        rest = c.get("/subscriptions", params={"followerProxy": follower, "pageSize": 3, "pageToken": token})
        assert rest.content == envelope(_gets(c, ids[3:]))
        other = c.get("/subscriptions", params={"followerProxy": address(), "pageToken": token})
        assert other.status_code == 400
        assert other.json() == {"code": 3, "message": "pageToken: page token belongs to a list with other filters",
                                "details": []}


def test_list_after_a_patch_is_never_stale(edge: EdgeStack) -> None:
    follower = address()
    with edge.client() as c:
        sub = c.post("/subscriptions", json=bodies(follower)[3]).json()
        assert c.get("/subscriptions", params={"followerProxy": follower}).json()["subscriptions"] == [sub]
        patched = c.patch(f"/subscriptions/{sub['id']}", json={"label": "renamed", "sizing": {"fixedUsd": "3"}})
        assert patched.status_code == 200
        listed = c.get("/subscriptions", params={"followerProxy": follower}).json()["subscriptions"]
        assert listed == [patched.json()] and listed[0]["label"] == "renamed"
        c.post(f"/subscriptions/{sub['id']}/pause", json={})
        c.delete(f"/subscriptions/{sub['id']}")
        assert c.get("/subscriptions", params={"followerProxy": follower}).json()["subscriptions"] == [
            c.get(f"/subscriptions/{sub['id']}").json()]


FOLLOWER = "0x" + "ab" * 20
# Recorded through Envoy while GET /subscriptions still went to ListSubscriptions (ListSubscriptionsResponse
# transcoded by Envoy): the route change must not change one of them.
ERRORS: list[tuple[str, int, dict[str, Any]]] = [
    ("", 400, {"code": 3, "message": "followerProxy: required (0x + 40 hex characters)", "details": []}),
    ("?followerProxy=0x12", 400,
     {"code": 3, "message": 'followerProxy: must be 0x + 40 hex characters, got "0x12"', "details": []}),
    (f"?followerProxy={FOLLOWER}&pageSize=501", 400,
     {"code": 3, "message": "pageSize: must be between 1 and 500, got 501", "details": []}),
    (f"?followerProxy={FOLLOWER}&pageSize=-1", 400,
     {"code": 3, "message": "pageSize: must be between 1 and 500, got -1", "details": []}),
    (f"?followerProxy={FOLLOWER}&pageSize=abc", 400,
     {"code": 3, "details": [], "message": 'page_size: invalid value "abc" for type TYPE_INT32'}),
    (f"?followerProxy={FOLLOWER}&pageToken=zzz", 400,
     {"code": 3, "message": "pageToken: invalid page token", "details": []}),
    (f"?followerProxy={FOLLOWER}&state=SUBSCRIPTION_STATE_BOGUS", 400,
     {"code": 3, "details": [], "message": 'state: invalid value "SUBSCRIPTION_STATE_BOGUS" for type '
                                           "type.googleapis.com/tradingtools.control.v1.SubscriptionState"}),
    # changed since: strict_json refuses a parameter the route does not take before the transcoder does
    (f"?followerProxy={FOLLOWER}&nope=1", 400, {"code": 3, "message": "nope: unknown query parameter", "details": []}),
    (f"?followerProxy={FOLLOWER}&leaderProxy=0xzz", 400,
     {"code": 3, "message": 'leaderProxy: must be 0x + 40 hex characters, got "0xzz"', "details": []}),
]


@pytest.mark.parametrize(("query", "status", "body"), ERRORS)
def test_list_errors_are_unchanged(edge: EdgeStack, query: str, status: int, body: dict[str, Any]) -> None:
    got_status, headers, reply = raw_request(edge.envoy.port, "GET", "/subscriptions" + query, edge.auth())
    assert (got_status, reply) == (status, body)
    assert headers["content-type"] == "application/json"


def test_list_without_a_token_is_401(edge: EdgeStack) -> None:
    status, headers, reply = raw_request(edge.envoy.port, "GET", f"/subscriptions?followerProxy={FOLLOWER}")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert reply == {"code": 16, "message": "missing or invalid bearer token", "details": []}
