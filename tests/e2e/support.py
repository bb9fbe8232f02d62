"""Helpers of the end-to-end tests: subscriptions through Envoy, trades on the simulator, the fake's record."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx
import redis

from common.config import StorageSettings
from sim.insiders import PostRecord
from sim.polymarket import SimMarket, SimTrade
from sim.scenarios import set_best_bid
from tests.helpers import eventually_sync
from tools.pipeline import Pipeline

CENT = Decimal("0.01")


def address() -> str:
    """A fresh 0x + 40 hex address."""
    return "0x" + secrets.token_hex(20)


@dataclass(frozen=True)
class Follower:
    """A follower's identity and its subscription."""

    proxy: str
    wallet_id: str
    sub: dict[str, Any]

    @property
    def sub_id(self) -> str:
        return str(self.sub["id"])


def subscribe(rest: httpx.Client, leader: str, *, sizing: dict[str, str], mode: str = "EXECUTION_MODE_LIVE",
              filters: dict[str, Any] | None = None, **extra: Any) -> Follower:
    """Create a subscription through Envoy (200 expected)."""
    proxy, wallet_id = address(), f"w_{secrets.token_hex(6)}"
    body = {"followerUserId": f"u_{wallet_id}", "followerWalletId": wallet_id, "followerProxy": proxy,
            "leaderProxy": leader, "mode": mode, "sizing": sizing, "filters": {"copySells": True, **(filters or {})},
            **extra}
    reply = rest.post("/subscriptions", json=body)
    assert reply.status_code == 200, reply.text
    return Follower(proxy, wallet_id, reply.json())


def wait_followed(p: Pipeline, leader: str, timeout_s: float = 20.0) -> None:
    """Ingest follows ``leader`` once its poller asked the data-api about it (the new-leader backfill)."""
    eventually_sync(lambda: any(q.get("user") == leader for _path, q in
                                p.sim.call(lambda: list(p.sim.sim.data.requests))),
                    timeout_s=timeout_s, interval_s=0.05, message=f"ingest follows {leader}")


def add_market(p: Pipeline, **kwargs: Any) -> SimMarket:
    """A market with a deep two-sided book (mid 0.5 unless given)."""
    kwargs.setdefault("level_size", "100000")
    return p.sim.call(p.sim.sim.add_market, **kwargs)


def trade(p: Pipeline, leader: str, market: SimMarket, *, side: str = "BUY", price: str = "0.51",
          size: str = "100", **kwargs: Any) -> SimTrade:
    """One leader fill on the simulator (RTDS and the data-api unless ``feeds`` says otherwise)."""
    return p.sim.call(p.sim.sim.trade, leader, market=market, token=market.tokens[0], side=side, price=price,
                      size=size, **kwargs)


def move_bid(p: Pipeline, market: SimMarket, bid: str) -> None:
    """Replace the first token's book around a best bid."""
    p.sim.call(set_best_bid, p.sim.sim, market, bid)


def posts(p: Pipeline, wallet_id: str | None = None) -> list[PostRecord]:
    """POST /v1/orders received by the Insiders fake (of one wallet when given; faulted ones have no body)."""
    records: list[PostRecord] = p.sim.call(lambda: list(p.sim.insiders.posts))
    if wallet_id is None:
        return records
    return [r for r in records if (r.body or {}).get("walletId") == wallet_id]


def created(p: Pipeline, wallet_id: str) -> dict[str, dict[str, Any]]:
    """Orders the fake created for a wallet, by client order id."""
    return {r.client_order_id: dict(r.body or {}) for r in posts(p, wallet_id) if r.outcome == "created"}


def post_counts(records: list[PostRecord]) -> dict[str, int]:
    """POSTs per client order id."""
    counts: dict[str, int] = {}
    for r in records:
        key = r.client_order_id or r.idempotency_key
        counts[key] = counts.get(key, 0) + 1
    return counts


def floor_cents(value: Decimal) -> Decimal:
    """Round down to the cent."""
    return value.quantize(CENT, rounding=ROUND_DOWN)


def poll_until(p: Pipeline, leader: str) -> int:
    """The end (epoch s) of ingest's last complete data-api window for ``leader`` (0 before the first)."""
    client = redis.Redis.from_url(StorageSettings.from_env(p.env).redis_url.value, decode_responses=True)
    try:
        raw = client.hget("tt:ingest:poll_until", leader)
    finally:
        client.close()
    return int(float(raw)) if raw else 0


def wait_polled_after(p: Pipeline, leader: str, when_s: float, timeout_s: float = 20.0) -> None:
    """Wait for a complete data-api poll of ``leader`` that started after ``when_s``."""
    eventually_sync(lambda: poll_until(p, leader) >= int(when_s) + 2, timeout_s=timeout_s, interval_s=0.1,
                    message=f"a data-api poll of {leader} after {when_s:.0f}")


def get_json(rest: httpx.Client, path: str) -> dict[str, Any]:
    """GET through Envoy, 200 expected."""
    reply = rest.get(path)
    assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text}"
    data: dict[str, Any] = reply.json()
    return data


def now_s() -> float:
    """Wall-clock seconds."""
    return time.time()
