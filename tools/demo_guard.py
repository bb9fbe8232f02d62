"""The guard part of ``make demo``: exits firing on a simulated price path, a loss-stop pausing a follower.

Ava holds three positions from the session; a take-profit, a trailing stop and a stop-loss are
created on them through REST (as the trading terminal would), then the simulator walks each
market's best bid (:func:`sim.scenarios.guard_paths`). Guard's ``StreamTriggerEvents`` shows each
trigger ARMED → FIRED → DONE and the Insiders fake shows the one SELL each fire sent. Then the
politics market collapses (:func:`sim.scenarios.loss_path`) and Eve's loss-stop pauses her
subscription through the internal perf-action RPC; the next politics trade is not copied to her.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal
from typing import Any

from sim.polymarket.model import random_hex
from sim.scenarios import LeaderFill, Phase, PricePath, guard_paths, loss_path, play_phase, set_best_bid
from tools.demo_checks import Checker
from tools.demo_copy import World, routed_for, terminal_for
from tools.demo_report import SessionResult, copy_lines
from tools.demo_rest import DemoFailure, Walker
from tools.demo_streams import StreamTap, trigger_tap
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.guard.v1 import guard_pb2 as gpb

TRIGGERS: dict[str, dict[str, str]] = {
    "g-tp": {"kind": "TRIGGER_KIND_TAKE_PROFIT", "triggerPrice": "0.5"},
    "g-trail": {"kind": "TRIGGER_KIND_TRAILING_STOP", "trailPct": "10", "activationPrice": "0.45"},
    "g-sl": {"kind": "TRIGGER_KIND_STOP_LOSS", "triggerPrice": "0.33"},
}
KIND_NAMES = {"g-tp": "take-profit", "g-trail": "trailing stop", "g-sl": "stop-loss"}
PATH_STEP_S = 0.15  # a price path is a sequence over time: one step every 150 ms


def _event_name(e: gpb.TriggerEvent) -> str:
    return gpb.TriggerEventType.Name(e.type).removeprefix("TRIGGER_EVENT_TYPE_")


def held_shares(world: World, result: SessionResult, key: str, asset: str) -> Decimal:
    """A follower's filled shares of an asset over the session (BUYs minus SELLs)."""
    total = Decimal(0)
    for _r, o in result.orders():
        if o.subscription_id != world.subs[key] or o.asset_id != asset:
            continue
        e = result.terminal[o.client_order_id]
        if e.type == epb.ORDER_EVENT_TYPE_FILLED:
            total += Decimal(e.filled_size) * (1 if o.side == 1 else -1)
    return total


def run(world: World, result: SessionResult, w: Walker) -> None:
    """Exits on price paths, then the loss-stop; every outcome checked."""
    p = world.pipeline
    proxy, wallet_id, sub = world.proxies["ava"], world.wallet_ids["ava"], world.subs["ava"]
    tap: StreamTap[gpb.TriggerEvent] = trigger_tap(p.channel("guard"),
                                                   keep=lambda e: e.trigger.wallet == proxy).start()
    try:
        ids: dict[str, str] = {}
        held: dict[str, Decimal] = {}
        for key, spec in TRIGGERS.items():
            market = world.markets[key]
            held[key] = held_shares(world, result, "ava", market.tokens[0])
            body = {"wallet": proxy, "followerWalletId": wallet_id, "subscriptionId": sub,
                    "assetId": market.tokens[0], "sellFraction": "1", "priceSource": "PRICE_SOURCE_BEST_BID", **spec}
            detail = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "kind")
            created = w.call("POST", "/triggers", 200, body=body, body_line=False,
                             note=f"{spec['kind'].removeprefix('TRIGGER_KIND_')} ({detail}) on Ava's "
                                  f"{held[key]} shares of {market.slug}, sell all")
            ids[key] = created["id"]
        tap.wait(lambda items: {e.trigger.id for e in items if e.type == gpb.TRIGGER_EVENT_TYPE_ARMED}
                 >= set(ids.values()), 20.0, "the three triggers ARMED")
        ok = Checker(w.out)
        for path in guard_paths():
            _walk_exit(world, w, tap, path, ids[path.market], held[path.market], ok)
        _loss_stop(world, w, ok)
    finally:
        tap.stop()


def _walk_exit(world: World, w: Walker, tap: StreamTap[gpb.TriggerEvent], path: PricePath, trigger_id: str,
               held: Decimal, ok: Checker) -> None:
    p = world.pipeline
    market = world.markets[path.market]
    w.out(f"\n  ▸ {market.slug}: best bid {' → '.join(path.bids)} ({path.note})")
    for bid in path.bids:
        p.sim.call(set_best_bid, p.sim.sim, market, bid)
        if path.market == "g-trail":
            _wait_mark(w, trigger_id, Decimal(bid))
        else:
            time.sleep(PATH_STEP_S)
    events = tap.wait(lambda items: any(e.trigger.id == trigger_id and e.type in (
        gpb.TRIGGER_EVENT_TYPE_DONE, gpb.TRIGGER_EVENT_TYPE_FAILED) for e in items), 20.0,
        f"trigger {trigger_id} DONE")
    mine = [e for e in events if e.trigger.id == trigger_id]
    for e in mine:
        extra = f" at {e.price}" if e.price and e.type == gpb.TRIGGER_EVENT_TYPE_FIRED else ""
        mark = (f", high-water mark {e.trigger.high_water_mark}"
                if e.trigger.high_water_mark not in ("", "0") and e.type == gpb.TRIGGER_EVENT_TYPE_FIRED else "")
        w.out(f"    TriggerEvent {_event_name(e):<6} {trigger_id}{extra}{mark}  {e.reason}")
    fired = [e for e in mine if e.type == gpb.TRIGGER_EVENT_TYPE_FIRED]
    coid = fired[0].trigger.order_id if fired else ""
    posts = p.sim.call(lambda: [(r.outcome, dict(r.body or {})) for r in p.sim.insiders.posts_for(coid)])
    posts = posts if coid else []
    created = [body for outcome, body in posts if outcome == "created"]
    order = p.sim.call(p.sim.insiders.order, coid) if coid else None
    for body in created:
        w.out(f"    Insiders API ← POST /v1/orders SELL {body.get('size')} sh limit {body.get('limitPrice')} "
              f"({body.get('orderType')}, {coid})"
              + (f" → {order.status} {order.filled_size}@{order.avg_price}" if order is not None else ""))
    ok(len(fired) == 1 and mine[-1].type == gpb.TRIGGER_EVENT_TYPE_DONE and len(created) == 1
       and created[0].get("side") == "SELL" and Decimal(str(created[0].get("size"))) == held,
       f"the {KIND_NAMES.get(path.market, '?')} fired once: one SELL of all {held} shares at the Insiders API, DONE",
       f"{len(fired)} fires, {len(created)} SELLs created, last {_event_name(mine[-1])}")


def _wait_mark(w: Walker, trigger_id: str, bid: Decimal, activation: Decimal = Decimal("0.45"),
               timeout_s: float = 10.0) -> None:
    """On the way up past the activation price, step on only once guard's high-water mark has followed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        t: dict[str, Any] = w.client.get(f"/triggers/{trigger_id}",
                                         headers={"Authorization": f"Bearer {w.token}"}).json()
        mark = Decimal(t.get("highWaterMark") or "0")
        if bid < activation or mark >= bid or t.get("state") != "TRIGGER_STATE_ARMED":
            time.sleep(PATH_STEP_S)
            return
        time.sleep(0.05)
    raise DemoFailure(f"guard did not follow the trailing stop's high-water mark to {bid} within {timeout_s:g}s")


def _loss_stop(world: World, w: Walker, ok: Checker) -> None:
    p = world.pipeline
    path, eve = loss_path(), world.subs["eve"]
    market = world.markets[path.market]
    w.out(f"\n  ▸ {market.slug}: best bid {' → '.join(path.bids)} ({path.note}); Eve's loss-stop is $25")
    for bid in path.bids:
        p.sim.call(set_best_bid, p.sim.sim, market, bid)
        time.sleep(PATH_STEP_S)
    deadline = time.monotonic() + 20.0
    sub: dict[str, Any] = {}
    while time.monotonic() < deadline:
        sub = w.client.get(f"/subscriptions/{eve}", headers={"Authorization": f"Bearer {w.token}"}).json()
        if sub.get("state") != "SUBSCRIPTION_STATE_ACTIVE":
            break
        time.sleep(0.1)
    w.call("GET", f"/subscriptions/{eve}", 200, show=("id", "state", "pausedReason", "stats"))
    ok(sub.get("state") == "SUBSCRIPTION_STATE_PAUSED" and str(sub.get("pausedReason", "")).startswith("LOSS_STOP"),
       "guard's loss-stop paused Eve's subscription through the internal perf-action RPC",
       f"state {sub.get('state')}, reason {sub.get('pausedReason')!r}")
    phase = Phase("after-pause", "the politics leader buys again")
    phase.fills.append(LeaderFill("politics", path.market, "BUY", Decimal(path.bids[-1]) + Decimal("0.01"),
                                  Decimal(100), random_hex(32)))
    p.sim.run(play_phase(p.sim.sim, world.markets, world.leaders, phase))
    routed = routed_for(world, phase.fills, 20.0)
    terminal = terminal_for(world, routed, 20.0)
    w.out(f"\n  ▸ {phase.title}")
    for line in copy_lines(world, routed, terminal):
        w.out(line)
    copied_to = Counter(world.sub_key.get(o.subscription_id) for r in routed for o in r.orders)
    decided_for = copied_to + Counter(world.sub_key.get(s.subscription_id) for r in routed for s in r.skips)
    ok(copied_to["cleo"] == 1 and decided_for["eve"] == 0,
       "the next politics trade is copied to Cleo and not to the paused Eve", f"decisions {dict(decided_for)}")
