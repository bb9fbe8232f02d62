"""GET /positions and GET /subscriptions/{id}/positions through the real Envoy, control, PostgreSQL and
Redis: the JSON as the contract prints it, the state filter, pages across current and ended lives, the
bearer gate, 400s naming the field and 404."""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.edge.conftest import EdgeStack, raw_request
from tests.edge.test_routes import address, keys_are_camel, sub_body
from tests.position_rows import T0, insert, life

pytestmark = pytest.mark.integration

ASSETS = [str(10**70 + i) for i in range(4)]
POSITION_KEYS = {
    "id", "wallet", "followerWalletId", "subscriptionId", "assetId", "conditionId", "outcome", "marketSlug",
    "venue", "origin", "state", "shares", "avgCost", "costUsd", "mark", "unrealizedPnlUsd", "realizedPnlUsd",
    "resolution", "redemption", "venueShares", "openTime", "updateTime",
}


def wallet_lives(db_url: str, wallet: str) -> dict[str, dict[str, Any]]:
    """A wallet with an open external life, a won one and an ended (history) one."""
    wid = "w_" + secrets.token_hex(4)
    won_cond = "0x" + secrets.token_hex(32)
    return {
        "open": insert(db_url, "positions", life(3, wallet=wallet, follower_wallet_id=wid, asset_id=ASSETS[0],
                                                 origin="EXTERNAL", venue_shares=Decimal("714.28"),
                                                 reconciled_at=T0 + timedelta(hours=1))),
        "won": insert(db_url, "positions", life(2, wallet=wallet, follower_wallet_id=wid, asset_id=ASSETS[1],
                                                condition_id=won_cond, state="RESOLVED_WON", size=Decimal(0),
                                                resolved_shares=Decimal(40), payout_per_share=Decimal(1),
                                                winning_asset_id=ASSETS[1], realized_pnl_usd=Decimal(30),
                                                resolved_at=T0 + timedelta(hours=2),
                                                closed_at=T0 + timedelta(hours=2))),
        "closed": insert(db_url, "position_history", life(1, wallet=wallet, follower_wallet_id=wid,
                                                          asset_id=ASSETS[0], state="CLOSED", size=Decimal(0),
                                                          realized_pnl_usd=Decimal("-1.5"),
                                                          closed_at=T0 + timedelta(minutes=50))),
    }


def test_a_wallets_positions_as_json(edge: EdgeStack) -> None:
    wallet = address()
    lives = wallet_lives(edge.db_url, wallet)
    with edge.client() as c:
        reply = c.get("/positions", params={"wallet": wallet.upper().replace("0X", "0x")})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert keys_are_camel(body) and body["nextPageToken"] == ""
    got = {p["id"]: p for p in body["positions"]}
    assert list(got) == [lives[k]["id"] for k in ("open", "won", "closed")]  # newest first

    ext = got[lives["open"]["id"]]
    assert POSITION_KEYS | {"reconcileTime"} == set(ext)  # unset timestamps (markTime, closeTime) are left out
    assert (ext["origin"], ext["state"], ext["venue"]) == (
        "POSITION_ORIGIN_EXTERNAL", "POSITION_STATE_OPEN", "VENUE_INSIDERS")
    assert (ext["shares"], ext["avgCost"], ext["costUsd"], ext["venueShares"]) == ("714.28", "0.0349", "24.93",
                                                                                   "714.28")
    assert ext["wallet"] == wallet and ext["subscriptionId"] == "" and ext["mark"] == ""
    assert (ext["unrealizedPnlUsd"], ext["realizedPnlUsd"]) == ("0", "0")
    assert ext["resolution"] == {"winningAssetId": "", "payoutPerShare": ""}
    assert ext["redemption"] == {"state": "REDEMPTION_STATE_UNSPECIFIED", "txHash": "", "attempts": 0, "reason": ""}
    assert ext["openTime"] == "2026-11-20T10:03:00Z" and ext["reconcileTime"] == "2026-11-20T11:00:00Z"

    won = got[lives["won"]["id"]]
    assert won["state"] == "POSITION_STATE_RESOLVED_WON" and won["shares"] == "40"
    assert won["resolution"] == {"winningAssetId": ASSETS[1], "payoutPerShare": "1",
                                 "resolveTime": "2026-11-20T12:00:00Z"}
    assert won["realizedPnlUsd"] == "30" and won["closeTime"] == "2026-11-20T12:00:00Z"

    closed = got[lives["closed"]["id"]]
    assert closed["state"] == "POSITION_STATE_CLOSED" and closed["realizedPnlUsd"] == "-1.5"

    with edge.client() as c:
        resolved = c.get("/positions", params={"wallet": wallet, "state": "POSITION_STATE_RESOLVED_WON"}).json()
    assert [p["id"] for p in resolved["positions"]] == [lives["won"]["id"]]


def test_pages_and_the_subscription_route(edge: EdgeStack) -> None:
    wallet = address()
    with edge.client() as c:
        sub = c.post("/subscriptions", json=sub_body(follower=wallet)).json()
    lives = [insert(edge.db_url, "position_history", life(i, wallet=wallet, subscription_id=sub["id"],
                                                           state="CLOSED", size=Decimal(0))) for i in range(3)]
    lives.append(insert(edge.db_url, "positions", life(5, wallet=wallet, subscription_id=sub["id"],
                                                       follower_wallet_id="w_" + secrets.token_hex(4))))
    newest_first = [r["id"] for r in reversed(lives)]
    for path, params in ((f"/subscriptions/{sub['id']}/positions", {}), ("/positions", {"wallet": wallet})):
        seen: list[str] = []
        token = ""
        with edge.client() as c:
            for _ in range(5):
                page = c.get(path, params={**params, "pageSize": 3, **({"pageToken": token} if token else {})})
                assert page.status_code == 200, page.text
                seen += [p["id"] for p in page.json()["positions"]]
                token = page.json()["nextPageToken"]
                if not token:
                    break
        assert seen == newest_first, path


def test_a_token_is_required(edge: EdgeStack) -> None:
    with edge.client(token_index=None) as c:
        for path in (f"/positions?wallet={address()}", "/subscriptions/sub_x/positions"):
            reply = c.get(path)
            assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("query", "field"), [
    ("", "wallet"),
    ("wallet=0x1234", "wallet"),
    (f"wallet={'0x' + 'g' * 40}", "wallet"),
    ("wallet={w}&pageSize=501", "pageSize"),
    ("wallet={w}&pageSize=abc", "page_size"),
    ("wallet={w}&state=POSITION_STATE_BOGUS", "state"),
    ("wallet={w}&pageToken=bm9wZQ", "pageToken"),
    ("wallet={w}&nope=1", "nope"),
])
def test_bad_queries_are_400_naming_the_field(edge: EdgeStack, query: str, field: str) -> None:
    status, _, reply = raw_request(edge.envoy.port, "GET", "/positions?" + query.format(w=address()), edge.auth())
    assert status == 400, reply
    assert reply["code"] == 3 and field in reply["message"]


def test_unknown_subscription_is_404(edge: EdgeStack) -> None:
    with edge.client() as c:
        reply = c.get("/subscriptions/sub_01JD3X6Q8Z5V7K2M4N6P8R0T2V/positions")
        bad_state = c.get("/subscriptions/sub_x/positions", params={"state": "OPEN"})
    assert reply.status_code == 404 and reply.json()["code"] == 5
    assert "sub_01JD3X6Q8Z5V7K2M4N6P8R0T2V" in reply.json()["message"]
    assert bad_state.status_code == 400 and "state" in bad_state.json()["message"]
