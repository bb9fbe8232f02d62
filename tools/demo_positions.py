"""The positions part of ``make demo``: a market resolves, and the venue's count is the truth.

1. Ava's open-position cap is set to what she holds, so the sports leader's next BUY in a new market is skipped
   for her (MAX_OPEN_POSITIONS). Then the Champions League final resolves for Real Madrid (its socket event and
   its REST market): Ava's and Ben's winning shares are settled at $1 and redeemed through the Insiders API (one
   redemption each, followed to CONFIRMED on the executor's ``StreamRedemptionEvents``), and the Ohio senate
   race resolves against the incumbent: Cleo's LIVE and Eve's PAPER shares close at $0 (no redemption). With one
   position fewer, the leader's next BUY in the new market is copied to Ava.
2. Dan sells most of his Fed shares in the trading terminal (outside the engine) and buys some snow shares there.
   Reconciliation with the venue corrects his booked position to the venue's count and finds the external
   position; then the crypto leader sells half of its Fed shares and Dan's mirrored SELL is sized from the
   reconciled count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sim.polymarket.model import random_hex
from sim.scenarios import LeaderFill, Phase, play_phase
from tools.demo_checks import Checker
from tools.demo_copy import World, routed_for, terminal_for
from tools.demo_report import copy_lines
from tools.demo_rest import DemoFailure, Walker
from tools.demo_streams import StreamTap, redemption_tap
from tradingtools.execution.v1 import execution_pb2 as epb

SHARE = Decimal("0.01")


def _positions(w: Walker, world: World, key: str, state: str = "") -> list[dict[str, Any]]:
    query = {"wallet": world.proxies[key], "pageSize": "100"}
    if state:
        query["state"] = state
    reply = w.client.get("/positions", params=query, headers={"Authorization": f"Bearer {w.token}"})
    if reply.status_code != 200:
        raise DemoFailure(f"GET /positions: {reply.status_code} {reply.text[:200]}")
    positions: list[dict[str, Any]] = reply.json().get("positions", [])
    return positions


def _in(w: Walker, world: World, key: str, token: str) -> dict[str, Any] | None:
    """The follower's current life in ``token`` (newest first)."""
    return next((x for x in _positions(w, world, key) if x["assetId"] == token), None)


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise DemoFailure(f"{what}: not within {timeout_s:g}s")


def _line(name: str, x: dict[str, Any], slugs: dict[str, str]) -> str:
    state = str(x.get("state", "")).removeprefix("POSITION_STATE_")
    return (f"    {name:<4} {slugs.get(x['assetId'], x['assetId'][:10])[:24]:<24} {x.get('outcome', ''):<4} "
            f"{x.get('shares'):>8} sh avg {x.get('avgCost', ''):<8} {state:<13} "
            f"realized ${x.get('realizedPnlUsd', '0')}")


def run(world: World, w: Walker) -> None:
    """Resolution, settlement, redemption, freed caps; then a terminal-side sell reconciled."""
    ok = Checker(w.out)
    _resolution(world, w, ok)
    _terminal(world, w, ok)


def _copy(world: World, w: Walker, fills: list[LeaderFill], title: str) -> list[epb.RoutedTrade]:
    p = world.pipeline
    phase = Phase("positions", title, fills=fills)
    p.sim.run(play_phase(p.sim.sim, world.markets, world.leaders, phase))
    routed = routed_for(world, phase.fills, 20.0)
    terminal = terminal_for(world, routed, 30.0)
    w.out(f"\n  ▸ {title}")
    for line in copy_lines(world, routed, terminal):
        w.out(line)
    return routed


def _resolution(world: World, w: Walker, ok: Checker) -> None:
    p = world.pipeline
    nba, senate = world.markets["ucl"], world.markets["senate"]
    slugs = world.slug_by_asset
    winners = {k: _in(w, world, k, nba.tokens[0]) for k in ("ava", "ben")}
    losers = {k: _in(w, world, k, senate.tokens[0]) for k in ("cleo", "eve")}
    holders = {k: x for k, x in {**winners, **losers}.items()
               if x is not None and x.get("state") == "POSITION_STATE_OPEN"}
    ok(set(winners) <= set(holders) and bool(set(losers) & set(holders)),
       "Ava and Ben hold the Champions League final, Cleo and Eve the Ohio senate race (GET /positions)",
       f"open: {sorted(holders)}")
    w.out("\n  ▸ open positions before the resolution (GET /positions?wallet=…&state=POSITION_STATE_OPEN)")
    for k, x in holders.items():
        w.out(_line(k.capitalize(), x, slugs) + f" mark {x.get('mark') or '-'} unrealized ${x.get('unrealizedPnlUsd')}")

    # Ava at her open-position cap: the next BUY in a new market is skipped for her
    ava_open = len(_positions(w, world, "ava", "POSITION_STATE_OPEN"))
    w.call("PATCH", f"/subscriptions/{world.subs['ava']}", 200, body={"risk": {"maxOpenPositions": ava_open}},
           body_line=False, note=f"Ava may hold {ava_open} open positions: as many as she holds now")
    world.markets["mvp"] = p.sim.call(p.sim.sim.add_market, slug="nba-mvp-2026", event_slug="nba-2026",
                                      title="Will Tatum be MVP?", mid="0.30", level_size="5000")
    before = _copy(world, w, [LeaderFill("sports", "mvp", "BUY", Decimal("0.31"), Decimal(200), random_hex(32))],
                   "the sports leader buys a new market while Ava is at her cap")
    ava_skips = [s.reason for r in before for s in r.skips if s.subscription_id == world.subs["ava"]]
    ok(ava_skips == ["MAX_OPEN_POSITIONS"], "the copy is skipped for Ava: MAX_OPEN_POSITIONS", f"{ava_skips}")

    tap: StreamTap[epb.RedemptionEvent] = redemption_tap(
        p.channel("executor"), keep=lambda e: e.follower_wallet_id in world.wallet_ids.values()).start()
    try:
        w.out(f"\n  ▸ {nba.slug} resolves for {nba.outcomes[0]}; {senate.slug} resolves for {senate.outcomes[1]} "
              "(the socket's market_resolved and the CLOB REST market)")
        p.sim.call(p.sim.sim.resolve, nba, nba.tokens[0])
        p.sim.call(p.sim.sim.resolve, senate, senate.tokens[1])

        def settled() -> dict[str, dict[str, Any]] | None:
            out: dict[str, dict[str, Any]] = {}
            for k in winners:
                out[k] = _in(w, world, k, nba.tokens[0]) or {}
            for k in losers:
                if k in holders:
                    out[k] = _in(w, world, k, senate.tokens[0]) or {}
            states = {k: x.get("state") for k, x in out.items()}
            done = all(states[k] == "POSITION_STATE_REDEEMED" for k in winners) and all(
                states[k] == "POSITION_STATE_RESOLVED_LOST" for k in losers if k in holders)
            return out if done else None

        ended: dict[str, dict[str, Any]] = _wait("settled and redeemed", settled)
        for k, x in ended.items():
            red = x.get("redemption") or {}
            state = str(red.get("state", "")).removeprefix("REDEMPTION_STATE_")
            extra = (f" → redeemed, {state} tx {str(red.get('txHash', ''))[:12]}…"
                     if state not in ("", "UNSPECIFIED") else " → closed at $0" if "LOST" in x["state"] else "")
            w.out(_line(k.capitalize(), x, slugs) + extra)
        events = tap.wait(lambda items: sum(e.type == epb.REDEMPTION_EVENT_TYPE_CONFIRMED for e in items) >= 2,
                          20.0, "two redemptions CONFIRMED")
        for e in events:
            who = next((k for k, v in world.wallet_ids.items() if v == e.follower_wallet_id), "?").capitalize()
            kind = epb.RedemptionEventType.Name(e.type).removeprefix("REDEMPTION_EVENT_TYPE_")
            tx = e.tx_hash[:12] + "…" if e.tx_hash else ""
            w.out(f"    RedemptionEvent {kind:<9} {who:<4} {e.shares} winning shares → ${e.payout_usd}  {tx}")
    finally:
        tap.stop()
    redeemed = p.sim.call(lambda: dict(p.sim.insiders.holdings.taken()))
    mine = {k: redeemed.get(f"{world.wallet_ids[k]}|{nba.condition_id}", 0) for k in winners}
    ok(mine == {"ava": 1, "ben": 1} and not any(f"{world.wallet_ids[k]}|{senate.condition_id}" in redeemed
                                                 for k in losers),
       "each winner redeemed once through the Insiders API (Idempotency-Key per wallet and market); "
       "losers closed at $0, Eve's paper shares settled without a redemption", f"{redeemed}")
    ok(all(Decimal(ended[k]["realizedPnlUsd"]) > 0 for k in winners)
       and all(Decimal(x["realizedPnlUsd"]) < 0 for k, x in ended.items() if k in losers),
       "PnL realized at the payout: $1 a share for the winners (a gain), $0 for the losers (their cost lost)")

    after = _copy(world, w, [LeaderFill("sports", "mvp", "BUY", Decimal("0.31"), Decimal(200), random_hex(32))],
                  "the sports leader buys the new market again: Ava's cap is free")
    ava_orders = [o for r in after for o in r.orders if o.subscription_id == world.subs["ava"]]
    ok(len(ava_orders) == 1, "with her resolved position out of the count, the copy goes to Ava",
       f"orders {len(ava_orders)}")


def _terminal(world: World, w: Walker, ok: Checker) -> None:
    p = world.pipeline
    fed, snow = world.markets["fed"], world.markets["snow"]
    slugs = world.slug_by_asset
    dan_id = world.wallet_ids["dan"]
    booked = _in(w, world, "dan", fed.tokens[0])
    ok(booked is not None and booked.get("state") == "POSITION_STATE_OPEN",
       "Dan holds Fed shares the engine booked", f"{booked}")
    assert booked is not None
    held = Decimal(booked["shares"])
    sold = (held * Decimal("0.6")).quantize(SHARE, rounding=ROUND_DOWN)
    w.out(f"\n  ▸ in the trading terminal (outside the engine) Dan sells {sold} of his {held} "
          f"{fed.slug} shares and buys 30 {snow.slug} {snow.outcomes[1]} shares")
    p.sim.call(p.sim.insiders.holdings.terminal_trade, dan_id, fed.tokens[0], "SELL", sold, Decimal("0.30"))
    p.sim.call(p.sim.insiders.holdings.terminal_trade, dan_id, snow.tokens[1], "BUY", Decimal(30), Decimal("0.95"))
    venue_count = p.sim.call(lambda: p.sim.insiders.positions[dan_id][fed.tokens[0]][0])  # what the venue holds

    def reconciled() -> tuple[dict[str, Any], dict[str, Any]] | None:
        a, b = _in(w, world, "dan", fed.tokens[0]), _in(w, world, "dan", snow.tokens[1])
        if a and b and Decimal(a["shares"]) == venue_count and b.get("state") == "POSITION_STATE_OPEN":
            return a, b
        return None

    corrected, external = _wait("reconciled with the venue", reconciled)
    w.out(_line("Dan", corrected, slugs) + f" venueShares {corrected.get('venueShares')}  (was {held})")
    w.out(_line("Dan", external, slugs) + f" origin {str(external.get('origin')).removeprefix('POSITION_ORIGIN_')}")
    ok(Decimal(corrected["shares"]) == venue_count and external.get("origin") == "POSITION_ORIGIN_EXTERNAL",
       "reconciliation took the venue's count: the terminal sell corrected Dan's position, the terminal buy became "
       "an EXTERNAL position")

    leader_fed = sum(((f.size if f.side == "BUY" else -f.size) for _ph, f, _t in world.played
                      if f.leader == "crypto" and f.market == "fed"), Decimal(0))
    half = (leader_fed / 2).quantize(SHARE, rounding=ROUND_DOWN)
    routed = _copy(world, w, [LeaderFill("crypto", "fed", "SELL", Decimal("0.31"), half, random_hex(32))],
                   f"the crypto leader sells half of its {leader_fed} {fed.slug} shares")
    dan = [o for r in routed for o in r.orders if o.subscription_id == world.subs["dan"]]
    got = Decimal(dan[0].size) if dan and dan[0].size else None
    want = venue_count * half / leader_fed
    ok(got is not None and abs(got - want) <= max(SHARE, venue_count / 100),
       f"Dan's mirrored SELL is sized from the venue's count: {got} of {venue_count} shares (not of {held})",
       f"SELL {got}, expected about {want:.2f}")
