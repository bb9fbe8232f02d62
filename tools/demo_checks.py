"""The copy flow's checks: what the demo printed must be what the rules say (a failure exits non-zero)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

from tools.demo_copy import LEADER_NAMES, World
from tools.demo_report import CENT, SessionResult, floor_cents, post_outcomes
from tools.demo_rest import DemoFailure, Walker
from tradingtools.common.v1 import common_pb2
from tradingtools.execution.v1 import execution_pb2 as epb

SHARE = Decimal("0.01")
MARKET_MIN_SHARES = Decimal(5)
EXPECTED_SKIPS = ("MARKET_DENIED", "PRICE_ABOVE_MAX", "PRICE_BELOW_MIN", "LEADER_TRADE_TOO_SMALL", "NOTHING_HELD")


class Checker:
    """Prints one ✓ line per check; the first failed check raises DemoFailure."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.passed = 0

    def __call__(self, condition: bool, text: str, why: str = "") -> None:
        if not condition:
            self.out(f"  ✗ {text}" + (f": {why}" if why else ""))
            raise DemoFailure(f"check failed: {text}" + (f" ({why})" if why else ""))
        self.passed += 1
        self.out(f"  ✓ {text}")


def expected_buy_usd(spec_sizing: dict[str, str], notional: Decimal, balance: Decimal | None) -> Decimal:
    """The BUY amount the subscription's sizing asks for (no risk caps are set in the demo)."""
    mode = spec_sizing["mode"]
    if mode == "SIZING_MODE_FIXED_USD":
        amount = Decimal(spec_sizing["fixedUsd"])
    elif mode == "SIZING_MODE_PROPORTIONAL":
        amount = notional * Decimal(spec_sizing["ratio"])
    else:
        assert balance is not None
        amount = balance * Decimal(spec_sizing["percentOfBalance"]) / 100
    amount = max(amount, Decimal(spec_sizing.get("minOrderUsd") or "1"))
    if spec_sizing.get("maxOrderUsd"):
        amount = min(amount, Decimal(spec_sizing["maxOrderUsd"]))
    return floor_cents(amount)


def expected_sell(held: Decimal, leader_sold: Decimal, leader_before: Decimal) -> Decimal:
    """The router's SELL rule: the leader's fraction of the follower's shares, a sub-minimum remainder sold too."""
    fraction = Decimal(1) if leader_sold >= leader_before else leader_sold / leader_before
    size = (held * fraction).quantize(SHARE, rounding=ROUND_DOWN)
    if Decimal(0) < held - size < MARKET_MIN_SHARES:
        size = held.quantize(SHARE, rounding=ROUND_DOWN)
    return size


def check_copy_flow(world: World, result: SessionResult, stats: dict[str, Any], w: Walker) -> None:
    """Every check of the copy flow, printed."""
    ok = Checker(w.out)
    w.out("\n  checks:")
    names = world.sub_key
    followed_fills = [f for _ph, f, _t in world.played if f.leader in LEADER_NAMES]
    noise = [f for _ph, f, _t in world.played if f.leader not in LEADER_NAMES]
    ids = [r.trade.id for r in result.routed]
    assert world.routed is not None
    noise_routed = [r for r in world.routed.items() if r.trade.wallet.lower() == world.leaders["noise"]]
    ok(len(ids) == len(followed_fills) == len(set(ids)) and not noise_routed,
       f"{len(followed_fills)} followed leader fills, each seen on RTDS and the data-api → {len(set(ids))} routing "
       f"decisions, none twice; {len(noise)} fills of an unfollowed wallet never routed",
       f"{len(ids)} decisions, {len(set(ids))} distinct, {len(noise_routed)} unfollowed routed")

    orders = result.orders()
    not_filled = [result.terminal[o.client_order_id] for _r, o in orders
                  if result.terminal[o.client_order_id].type != epb.ORDER_EVENT_TYPE_FILLED]
    ok(all(e.reason for e in not_filled),
       f"all {len(orders)} copy orders reached a terminal state; the {len(not_filled)} not filled say why")

    posts = post_outcomes(world)
    created = Counter(coid for (coid, outcome), n in posts.items() for _ in range(n) if outcome == "created")
    paper = {o.client_order_id for _r, o in orders if o.mode == common_pb2.EXECUTION_MODE_PAPER}
    live = {o.client_order_id for _r, o in orders} - paper
    filled_live = {c for c in live if result.terminal[c].type == epb.ORDER_EVENT_TYPE_FILLED}
    twice = [c for c in live if created[c] > 1]
    ok(not twice and all(created[c] == 1 for c in filled_live) and not any(c in paper for c, _ in posts),
       f"Insiders API: each of the {len(filled_live)} filled live orders created exactly once "
       f"({sum(posts.values())} POSTs in all, {sum(n for (_c, o), n in posts.items() if o == 'fault')} answered 503); "
       f"the {len(paper)} paper orders never sent there", f"created twice: {twice[:3]}")

    wrong: list[str] = []
    balance = {k: Decimal(f.funding_usd) for k, f in world.followers.items() if f.funding_usd}
    for r, o in orders:
        if o.side != common_pb2.SIDE_BUY:
            continue
        key = names[o.subscription_id]
        want = expected_buy_usd(world.followers[key].sizing, Decimal(r.trade.price) * Decimal(r.trade.size),
                                balance.get(key))
        if Decimal(o.amount_usd) != want:
            wrong.append(f"{key} {o.amount_usd} != {want} for {r.trade.size}@{r.trade.price}")
    ok(not wrong, "every BUY sized by its subscription: Ava $25 and Dan $10 fixed, Ben 0.2× and Eve 0.25× the "
       "leader's notional (clamped), Cleo 2% of her funded $2,500 = $50", "; ".join(wrong[:3]))

    _check_multi_fill(ok, world, result)
    _check_exits(ok, world, result)

    stored, streamed, declined = stats["stored_skips"], stats["streamed_skips"], stats["executor_skips"]
    ok(stored == streamed + declined and all(stored[k] for k in EXPECTED_SKIPS),
       "skips recorded in PostgreSQL copy_skips = skips streamed by the router + copies the executor declined, "
       "with " + ", ".join(EXPECTED_SKIPS),
       f"stored {dict(stored)} vs streamed {dict(streamed)} + declined {dict(declined)}")
    thin = [result.terminal[o.client_order_id] for r, o in orders
            if world.slug_by_asset.get(r.trade.asset_id) == world.markets["thin"].slug]
    ok(bool(thin) and all(e.type == epb.ORDER_EVENT_TYPE_REJECTED and e.reason == "INSUFFICIENT_DEPTH" for e in thin)
       and not any(posts[(e.client_order_id, "created")] for e in thin),
       f"the thin book's {len(thin)} copies refused by the executor's depth check (INSUFFICIENT_DEPTH), never sent")

    _check_faults(ok, world, result, posts)
    _check_fills_endpoint(ok, world, result, w)
    eve = [result.terminal[o.client_order_id] for _r, o in orders if names[o.subscription_id] == "eve"]
    ok(bool(eve) and all(e.venue == common_pb2.VENUE_PAPER for e in eve),
       f"Eve's {len(eve)} copies filled by the paper venue against the live book")


def _check_multi_fill(ok: Checker, world: World, result: SessionResult) -> None:
    by_tx: dict[str, list[epb.RoutedTrade]] = defaultdict(list)
    for r in result.routed:
        by_tx[r.trade.tx_hash].append(r)
    multi = next(f for _ph, f, _t in world.played if f.note.startswith("multi-fill 1/3"))
    group = by_tx[multi.tx.lower()]
    ok(len(group) == 3 and len({r.trade.id for r in group}) == 3 and all(len(r.orders) == 2 for r in group)
       and sorted(r.trade.occurrence for r in group) == [0, 0, 1],
       f"one transaction with three fills (two identical, occurrence 0 and 1) → 3 leader trades → "
       f"{sum(len(r.orders) for r in group)} orders", f"{[(r.trade.id, r.trade.occurrence) for r in group]}")


def _check_exits(ok: Checker, world: World, result: SessionResult) -> None:
    nba = world.markets["nba"].tokens[0]
    leader = world.leaders["sports"]
    leader_held = Decimal(0)
    held: dict[str, Decimal] = defaultdict(Decimal)
    lines: list[str] = []
    wrong: list[str] = []
    for r in result.routed:
        if r.trade.asset_id != nba or r.trade.wallet.lower() != leader:
            continue
        size = Decimal(r.trade.size)
        if r.trade.side == common_pb2.SIDE_BUY:
            leader_held += size
            for o in r.orders:
                e = result.terminal[o.client_order_id]
                if e.type == epb.ORDER_EVENT_TYPE_FILLED:
                    held[o.subscription_id] += Decimal(e.filled_size)
            continue
        for o in r.orders:
            key = world.sub_key[o.subscription_id]
            want = expected_sell(held[o.subscription_id], size, leader_held)
            e = result.terminal[o.client_order_id]
            lines.append(f"{key.capitalize()} {o.size} of {held[o.subscription_id]}")
            if Decimal(o.size) != want or e.type != epb.ORDER_EVENT_TYPE_FILLED:
                wrong.append(f"{key}: {o.size} (want {want}), {epb.OrderEventType.Name(e.type)}")
            held[o.subscription_id] -= Decimal(e.filled_size or "0")
        leader_held -= size
    ok(bool(lines) and not wrong and all(v == 0 for v in held.values()),
       "the leader's exit mirrored proportionally, then closed: " + "; ".join(lines),
       "; ".join(wrong) or f"left {dict(held)}")


def _check_faults(ok: Checker, world: World, result: SessionResult, posts: Counter[tuple[str, str]]) -> None:
    retry = [o for r in result.by_phase["retry"] for o in r.orders]
    ok(bool(retry) and all(posts[(o.client_order_id, "fault")] >= 1 and posts[(o.client_order_id, "created")] == 1
                           and result.terminal[o.client_order_id].type == epb.ORDER_EVENT_TYPE_FILLED for o in retry),
       f"a 503 blip: {len(retry)} orders retried with the same Idempotency-Key, each filled once")
    storm = [o for r in result.by_phase["storm"] for o in r.orders if o.mode == common_pb2.EXECUTION_MODE_LIVE]
    opened = any(s.startswith("OPEN") for s in world.breaker_states)
    outcomes = Counter(_outcome_name(result.terminal[o.client_order_id]) for o in storm)
    ok(opened and all(posts[(o.client_order_id, "created")] <= 1 for o in storm),
       f"a 503 storm opened the circuit breaker; its {len(storm)} live orders ended "
       + ", ".join(f"{k} ×{v}" for k, v in outcomes.items()) + ", none sent twice", f"states {world.breaker_states}")
    recovered = [o for r in result.by_phase["recovered"] for o in r.orders]
    ok(bool(recovered) and all(result.terminal[o.client_order_id].type == epb.ORDER_EVENT_TYPE_FILLED
                               for o in recovered) and world.breaker_states[-1:] == ["CLOSED"],
       f"after the open period the half-open probe succeeded: breaker CLOSED, {len(recovered)} orders filled",
       f"states {world.breaker_states}")


def _outcome_name(e: epb.OrderEvent) -> str:
    return f"{epb.OrderEventType.Name(e.type).removeprefix('ORDER_EVENT_TYPE_')} {e.reason}"


def _check_fills_endpoint(ok: Checker, world: World, result: SessionResult, w: Walker) -> None:
    sub = world.subs["ava"]
    page = w.call("GET", f"/subscriptions/{sub}/fills?pageSize=500", 200, body_line=False,
                  note="Ava's fills, newest first")
    fills = page.get("fills", [])
    filled = {o.client_order_id for _r, o in result.orders()
              if o.subscription_id == sub and result.terminal[o.client_order_id].type == epb.ORDER_EVENT_TYPE_FILLED}
    got = {f.get("orderId") for f in fills}
    spent = sum((Decimal(f["notionalUsd"]) for f in fills if f.get("side") == "SIDE_BUY"), Decimal(0))
    ok(got == filled and all(f.get("copyLatencyMs") for f in fills),
       f"GET /subscriptions/{{id}}/fills lists Ava's {len(fills)} fills (${spent.quantize(CENT)} bought), "
       "each with copyLatencyMs", f"{len(got ^ filled)} orders differ")
