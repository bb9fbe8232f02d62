"""The control REST walk-through of ``make demo`` (issue 2): every call through Envoy, printed and checked.

A subscription is created (and the create replayed under the same Idempotency-Key), listed, read,
patched, paused, resumed and deleted; a trigger is created, listed, patched and cancelled; then a
401, a 404 on an internal route and a 400 naming the field. :class:`Walker` is also what the later
parts of the demo use for their REST calls.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

Printer = Callable[[str], None]
BODY_WIDTH = 220


class DemoFailure(RuntimeError):
    """A call answered something the contract does not allow."""


def prune(value: Any, top: bool = True) -> Any:
    """``value`` without empty strings, lists, objects and nulls below the top level (display only)."""
    if isinstance(value, dict):
        pruned = {k: prune(v, False) for k, v in value.items()}
        return pruned if top else {k: v for k, v in pruned.items() if v not in ("", [], {}, None)}
    if isinstance(value, list):
        return [prune(v, False) for v in value]
    return value


def compact(body: str, width: int = BODY_WIDTH) -> str:
    """A one-line rendering of a response body (empty fields left out), cut at ``width`` characters."""
    try:
        text = (json.dumps(prune(json.loads(body)), separators=(",", ":"), ensure_ascii=False)
                if body.strip() else "")
    except json.JSONDecodeError:
        text = " ".join(body.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _pick(body: str, show: tuple[str, ...]) -> str:
    if not show:
        return body
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return body
    if not isinstance(data, dict):
        return body
    if show == ("ids",):  # a page: the ids of its items
        return json.dumps({k: [i.get("id") for i in v] if isinstance(v, list) else v for k, v in data.items()})
    picked = {k: data[k] for k in show if k in data}
    if len(picked) < len(data):
        picked["…"] = f"{len(data) - len(picked)} more fields"
    return json.dumps(picked)


@dataclass
class Walker:
    """Makes calls through the gateway, prints them and checks their status."""

    client: httpx.Client
    token: str
    out: Printer
    calls: int = 0
    failures: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.out(f"\n── {title} " + "─" * max(0, 60 - len(title)))

    def call(self, method: str, path: str, expect: int, *, body: Any = None, auth: bool = True,
             headers: Mapping[str, str] | None = None, note: str = "",
             show: tuple[str, ...] = (), body_line: bool = True) -> dict[str, Any]:
        """One request; returns the JSON body; records a failure when the status is not ``expect``.

        ``show`` picks the top-level fields printed (all when empty); ``body_line=False`` prints
        only the request line (the body still when the status is unexpected).
        """
        hdrs = dict(headers or {})
        if auth:
            hdrs["Authorization"] = f"Bearer {self.token}"
        reply = self.client.request(method, path, json=body, headers=hdrs)
        self.calls += 1
        mark = "" if reply.status_code == expect else f"  << EXPECTED {expect}"
        suffix = f"   # {note}" if note else ""
        self.out(f"{method:<6} {path}  -> {reply.status_code}{mark}{suffix}")
        if reply.status_code == 401:
            self.out(f"{'':7}WWW-Authenticate: {reply.headers.get('www-authenticate', '(missing)')}")
        if body_line or reply.status_code != expect:
            self.out(f"{'':7}{compact(_pick(reply.text, show))}")
        if reply.status_code != expect:
            self.failures.append(f"{method} {path}: {reply.status_code} (expected {expect})")
            raise DemoFailure(self.failures[-1])
        try:
            data: dict[str, Any] = reply.json() if reply.text.strip() else {}
        except json.JSONDecodeError as exc:
            raise DemoFailure(f"{method} {path}: body is not JSON: {reply.text[:200]!r}") from exc
        return data

    def check(self, condition: bool, what: str) -> None:
        """Assert something about a response, as part of the walk."""
        if not condition:
            self.failures.append(what)
            raise DemoFailure(what)


def random_address() -> str:
    """A fresh 0x + 40 hex address (so reruns never collide with an earlier subscription)."""
    return "0x" + secrets.token_hex(20)


def subscription_body(follower: str, leader: str, wallet_id: str) -> dict[str, Any]:
    """A realistic create body in the documented shape."""
    return {
        "followerUserId": "u_demo",
        "followerWalletId": wallet_id,
        "followerProxy": follower,
        "leaderProxy": leader,
        "label": "sports whale",
        "mode": "EXECUTION_MODE_PAPER",
        "sizing": {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.05", "minOrderUsd": "1",
                   "maxOrderUsd": "250"},
        "filters": {"minPrice": "0.05", "maxPrice": "0.95", "minLeaderTradeUsd": "50",
                    "marketDenylist": ["btc-updown-5m"], "copySells": True, "maxSlippageBps": 200},
        "risk": {"maxMarketExposureUsd": "500", "maxTotalExposureUsd": "2000", "maxOpenPositions": 20,
                 "dailyLossLimitUsd": "300"},
        "exits": {"takeProfitPct": "40", "stopLossPct": "25",
                  "ladder": [{"gainPct": "20", "sellFraction": "0.5"}, {"gainPct": "50", "sellFraction": "1"}]},
        "perf": {"lossStopUsd": "400", "profitScaleAtUsd": "1000", "profitScaleMultiplier": "1.5"},
    }


def walk(w: Walker) -> None:
    """The Insiders backend's day, in order."""
    follower, leader, wallet_id = random_address(), random_address(), f"w_{secrets.token_hex(4)}"
    asset = "50343297147712368405712938127538102374911265471938208913723189234816304906499"

    w.section("Probes (no token needed)")
    w.call("GET", "/health", 200, auth=False)
    w.call("GET", "/ready", 200, auth=False)

    w.section("Subscriptions")
    key = f"demo-{secrets.token_hex(8)}"
    created = w.call("POST", "/subscriptions", 200, body=subscription_body(follower, leader, wallet_id),
                     headers={"Idempotency-Key": key}, note=f"Idempotency-Key {key}")
    sub_id = created.get("id", "")
    w.check(sub_id.startswith("sub_"), f"create returned no subscription id: {created}")
    w.check(created.get("state") == "SUBSCRIPTION_STATE_ACTIVE", "a new subscription is ACTIVE")
    again = w.call("POST", "/subscriptions", 200, body=subscription_body(follower, leader, wallet_id),
                   headers={"Idempotency-Key": key}, note="same key again: the first answer, nothing new",
                   show=("id", "state", "createTime"))
    w.check(again.get("id") == sub_id, "the replayed create returned another subscription")
    listed = w.call("GET", f"/subscriptions?followerProxy={follower}", 200, show=("ids",))
    w.check([s.get("id") for s in listed.get("subscriptions", [])] == [sub_id],
            "the follower should have exactly the one subscription")
    w.call("GET", f"/subscriptions/{sub_id}", 200, show=("id", "state", "mode", "sizing", "stats"))
    patched = w.call("PATCH", f"/subscriptions/{sub_id}", 200,
                     body={"label": "sports whale (halved)", "sizing": {"ratio": "0.025"}},
                     show=("id", "label", "sizing", "updateTime"))
    w.check(patched.get("sizing", {}).get("ratio") == "0.025", "PATCH did not change sizing.ratio")
    paused = w.call("POST", f"/subscriptions/{sub_id}/pause", 200, body={"reason": "demo pause"},
                    show=("id", "state", "pausedReason"))
    w.check(paused.get("state") == "SUBSCRIPTION_STATE_PAUSED", "pause did not pause")
    resumed = w.call("POST", f"/subscriptions/{sub_id}/resume", 200, body={}, show=("id", "state"))
    w.check(resumed.get("state") == "SUBSCRIPTION_STATE_ACTIVE", "resume did not resume")
    w.call("GET", f"/subscriptions/{sub_id}/fills", 200, note="no leader traded yet")

    w.section("Triggers")
    trigger = w.call("POST", "/triggers", 200, body={
        "wallet": follower, "followerWalletId": wallet_id, "subscriptionId": sub_id, "assetId": asset,
        "kind": "TRIGGER_KIND_STOP_LOSS", "triggerPrice": "0.22", "size": "40",
        "priceSource": "PRICE_SOURCE_BEST_BID"}, headers={"Idempotency-Key": f"{key}-trg"})
    trg_id = trigger.get("id", "")
    w.check(trg_id.startswith("trg_") and trigger.get("state") == "TRIGGER_STATE_ARMED",
            f"create returned no ARMED trigger: {trigger}")
    listed_t = w.call("GET", f"/triggers?wallet={follower}", 200, show=("ids",))
    w.check(trg_id in [t.get("id") for t in listed_t.get("triggers", [])], "the trigger is not listed")
    moved = w.call("PATCH", f"/triggers/{trg_id}", 200, body={"triggerPrice": "0.2"},
                   show=("id", "state", "triggerPrice", "size"))
    w.check(moved.get("triggerPrice") == "0.2", "PATCH did not move the trigger price")
    w.call("DELETE", f"/triggers/{trg_id}", 200)
    cancelled = w.call("GET", f"/triggers/{trg_id}", 200, show=("id", "state", "stateReason"))
    w.check(cancelled.get("state") == "TRIGGER_STATE_CANCELLED", "DELETE did not cancel the trigger")

    w.section("Stopping the subscription")
    w.call("DELETE", f"/subscriptions/{sub_id}", 200)
    stopped = w.call("GET", f"/subscriptions/{sub_id}", 200, show=("id", "state", "updateTime"))
    w.check(stopped.get("state") == "SUBSCRIPTION_STATE_STOPPED", "DELETE did not stop the subscription")

    w.section("Errors the contract promises")
    w.call("GET", f"/subscriptions?followerProxy={follower}", 401, auth=False, note="no token")
    w.call("POST", "/subscriptions/funding", 404, body={"followerWalletId": wallet_id, "balanceUsd": "100"},
           note="internal route, even with the token")
    bad = subscription_body(follower, "0x1234", wallet_id)
    error = w.call("POST", "/subscriptions", 400, body=bad, note="leaderProxy is not an address")
    w.check("leaderProxy" in error.get("message", "") or "leader_proxy" in error.get("message", ""),
            f"the 400 does not name the field: {error}")
