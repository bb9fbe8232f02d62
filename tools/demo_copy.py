"""The copy flow of ``make demo``: leaders, followers, a replayed session, one line per copy, a summary.

Three leaders and five followers (subscriptions created through REST: FIXED_USD, PROPORTIONAL,
PERCENT_OF_BALANCE with a balance recorded over the internal gRPC ``RecordFunding``, filters, one
PAPER follower) watch the scripted session of :mod:`sim.scenarios` played on the simulator. The
router's decisions (``RouterService.StreamRoutedTrades``) and the executor's order events
(``ExecutorService.StreamOrderEvents``) are read over gRPC; each phase ends when every followed
leader fill has been routed and every copy order is terminal, then prints one line per copy.
Everything printed is also checked: a wrong size, a missing or doubled order, an absent skip
raises :class:`DemoFailure`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis
from google.protobuf.timestamp_pb2 import Timestamp

from common.config import StorageSettings
from common.marketstate import book_key
from sim.polymarket import SimMarket
from sim.scenarios import LeaderFill, Phase, demo_markets, demo_session, install_markets, play_phase
from tools.demo_report import SessionResult, copy_lines
from tools.demo_rest import DemoFailure, Walker, random_address
from tools.demo_streams import StreamTap, order_tap, routed_tap, terminal_events
from tools.pipeline import Pipeline
from tradingtools.control.v1 import control_pb2 as cpb
from tradingtools.control.v1 import control_pb2_grpc as cgrpc
from tradingtools.execution.v1 import execution_pb2 as epb

Printer = Callable[[str], None]
LIVE, PAPER = "EXECUTION_MODE_LIVE", "EXECUTION_MODE_PAPER"
LEADER_NAMES = {"sports": "sports whale", "politics": "politics pro", "crypto": "crypto degen"}


@dataclass(frozen=True, slots=True)
class FollowerSpec:
    """One follower and its subscription."""

    key: str
    leader: str
    mode: str
    sizing: dict[str, str]
    filters: dict[str, Any]
    perf: dict[str, str] = field(default_factory=dict)
    funding_usd: str = ""

    @property
    def name(self) -> str:
        return self.key.capitalize()

    def describe(self) -> str:
        s = self.sizing
        how = {"SIZING_MODE_FIXED_USD": f"FIXED_USD ${s.get('fixedUsd')}",
               "SIZING_MODE_PROPORTIONAL": f"PROPORTIONAL ×{s.get('ratio')}",
               "SIZING_MODE_PERCENT_OF_BALANCE": f"PERCENT_OF_BALANCE {s.get('percentOfBalance')}%"}[s["mode"]]
        return f"{self.mode.removeprefix('EXECUTION_MODE_')} {how}"


FOLLOWERS = (
    FollowerSpec("ava", "sports", LIVE, {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25"},
                 {"minPrice": "0.05", "maxPrice": "0.95", "minLeaderTradeUsd": "10", "copySells": True}),
    FollowerSpec("ben", "sports", LIVE, {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.2", "minOrderUsd": "1",
                                         "maxOrderUsd": "100"},
                 {"minLeaderTradeUsd": "10", "copySells": True, "maxSlippageBps": 300}),
    FollowerSpec("cleo", "politics", LIVE, {"mode": "SIZING_MODE_PERCENT_OF_BALANCE", "percentOfBalance": "2"},
                 {"minLeaderTradeUsd": "10", "copySells": True}, funding_usd="2500"),
    FollowerSpec("dan", "crypto", LIVE, {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "10"},
                 {"minPrice": "0.1", "maxPrice": "0.9", "minLeaderTradeUsd": "20",
                  "marketDenylist": ["btc-updown-5m"], "copySells": True}),
    FollowerSpec("eve", "politics", PAPER, {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.25",
                                            "maxOrderUsd": "40"}, {"minLeaderTradeUsd": "10", "copySells": True},
                 perf={"lossStopUsd": "25"}),
)


@dataclass
class World:
    """Everything the copy flow set up, and what it saw."""

    pipeline: Pipeline
    markets: dict[str, SimMarket]
    leaders: dict[str, str]  # key → address (incl. "noise")
    followers: dict[str, FollowerSpec]
    proxies: dict[str, str]  # follower key → proxy
    wallet_ids: dict[str, str]
    subs: dict[str, str] = field(default_factory=dict)  # follower key → subscription id
    routed: StreamTap[epb.RoutedTrade] | None = None
    orders: StreamTap[epb.OrderEvent] | None = None
    played: list[tuple[Phase, LeaderFill, Any]] = field(default_factory=list)
    breaker_states: list[str] = field(default_factory=list)
    t0_ns: int = 0

    @property
    def sub_key(self) -> dict[str, str]:
        return {v: k for k, v in self.subs.items()}

    @property
    def slug_by_asset(self) -> dict[str, str]:
        return {t: m.slug for m in self.markets.values() for t in m.tokens}

    def leader_key(self, wallet: str) -> str:
        return next((k for k, a in self.leaders.items() if a == wallet.lower()), wallet[:10])

    def stop(self) -> None:
        for tap in (self.routed, self.orders):
            if tap is not None:
                tap.stop()


# -- set-up -----------------------------------------------------------------------------------


def setup(p: Pipeline, w: Walker) -> World:
    """Markets on the simulator, funding over internal gRPC, subscriptions over REST."""
    specs = demo_markets()
    markets = p.sim.call(install_markets, p.sim.sim, specs)
    w.out(f"simulated CLOB: {len(markets)} markets with two-sided books: "
          + ", ".join(m.slug for m in markets.values()))
    leaders = {k: random_address() for k in (*LEADER_NAMES, "noise")}
    run = random_address()[2:8]
    world = World(p, markets, leaders, {f.key: f for f in FOLLOWERS},
                  {f.key: random_address() for f in FOLLOWERS}, {f.key: f"w_{f.key}_{run}" for f in FOLLOWERS})
    for key, name in LEADER_NAMES.items():
        w.out(f"leader {key:<9} {leaders[key]}  ({name})")
    internal = cgrpc.InternalControlServiceStub(p.channel("control"))
    for f in FOLLOWERS:
        if f.funding_usd:
            as_of = Timestamp()
            as_of.GetCurrentTime()
            reply = internal.RecordFunding(cpb.RecordFundingRequest(
                follower_wallet_id=world.wallet_ids[f.key], balance_usd=f.funding_usd, as_of=as_of), timeout=10)
            w.check(Decimal(reply.balance_usd) == Decimal(f.funding_usd), f"RecordFunding answered {reply}")
            w.out(f"gRPC InternalControlService/RecordFunding {world.wallet_ids[f.key]} balance ${reply.balance_usd}"
                  "   # internal: the edge answers 404 for it")
    for f in FOLLOWERS:
        body = {"followerUserId": f"u_{f.key}", "followerWalletId": world.wallet_ids[f.key],
                "followerProxy": world.proxies[f.key], "leaderProxy": leaders[f.leader],
                "label": f"{f.name} copies the {LEADER_NAMES[f.leader]}", "mode": f.mode, "sizing": f.sizing,
                "filters": f.filters, "perf": f.perf}
        created = w.call("POST", "/subscriptions", 200, body=body, body_line=False,
                         note=f"{f.name}: {f.describe()} on {f.leader}" + _filters_note(f))
        w.check(str(created.get("id", "")).startswith("sub_"), f"no subscription id: {created}")
        world.subs[f.key] = created["id"]
    return world


def _filters_note(f: FollowerSpec) -> str:
    parts = [f"{k}={v}" for k, v in f.filters.items() if k in ("minPrice", "maxPrice", "minLeaderTradeUsd")]
    parts += [f"deny {','.join(f.filters['marketDenylist'])}"] if f.filters.get("marketDenylist") else []
    parts += [f"lossStop ${f.perf['lossStopUsd']}"] if f.perf.get("lossStopUsd") else []
    return f" ({', '.join(parts)})" if parts else ""


def wait_followed(p: Pipeline, leaders: Iterable[str], timeout_s: float = 20.0) -> None:
    """Wait until ingest follows every leader (its poller backfills a newly followed leader at once)."""
    wanted = set(leaders)
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {q.get("user", "") for _path, q in p.sim.call(lambda: list(p.sim.sim.data.requests))}
        if wanted <= seen:
            return
        if time.monotonic() > deadline:
            raise DemoFailure(f"ingest did not start following {sorted(wanted - seen)} within {timeout_s:g}s")
        time.sleep(0.05)


# -- the session ------------------------------------------------------------------------------


def _key(wallet: str, tx: str, side: str, price: Any, size: Any) -> tuple[str, str, str, Decimal, Decimal]:
    return wallet.lower(), tx.lower(), side, Decimal(str(price)).normalize(), Decimal(str(size)).normalize()


def _routed_key(r: epb.RoutedTrade) -> tuple[str, str, str, Decimal, Decimal]:
    side = "BUY" if r.trade.side == 1 else "SELL"
    return _key(r.trade.wallet, r.trade.tx_hash, side, r.trade.price, r.trade.size)


def start_taps(world: World) -> None:
    """Read the router's and the executor's streams (from the oldest event; only this run's)."""
    p = world.pipeline
    ours = set(world.leaders.values())  # the unfollowed "noise" wallet too: it must never be routed
    subs = set(world.subs.values())
    world.routed = routed_tap(p.channel("router"), keep=lambda r: r.trade.wallet.lower() in ours).start()
    world.orders = order_tap(p.channel("executor"), keep=lambda e: e.subscription_id in subs).start()


BREAKER_KEY = "tt:breaker:insiders"


def _redis(world: World) -> redis.Redis:
    return redis.Redis.from_url(StorageSettings.from_env(world.pipeline.env).redis_url.value, decode_responses=True)


def watch_breaker(world: World, stop: threading.Event) -> threading.Thread:
    """Record the Insiders breaker's state changes (the executor mirrors them in Redis)."""
    client = _redis(world)

    def run() -> None:
        last = world.breaker_states[-1] if world.breaker_states else "CLOSED"
        try:
            while not stop.is_set():
                h: dict[str, str] = client.hgetall(BREAKER_KEY)  # type: ignore[assignment]
                state = h.get("state", "CLOSED")
                if state == "OPEN":
                    state += f" after {h.get('failures')} failures"
                if state != last:
                    world.breaker_states.append(state)
                    last = state
                stop.wait(0.01)
        finally:
            client.close()

    thread = threading.Thread(target=run, name="breaker-watch", daemon=True)
    thread.start()
    return thread


def wait_breaker_may_probe(world: World, timeout_s: float = 90.0) -> float:
    """Wait until an open breaker's open period has passed (the next call probes); returns the seconds waited."""
    open_s = float(world.pipeline.env.get("TT_TUNE_EXECUTOR_BREAKER_OPEN_S") or 60)
    client = _redis(world)
    began = time.monotonic()
    try:
        while time.monotonic() - began < timeout_s:
            h = client.hgetall(BREAKER_KEY)
            if h.get("state") != "OPEN" or time.time() * 1000 >= int(h.get("opened_at_ms") or 0) + open_s * 1000:
                return time.monotonic() - began
            time.sleep(0.05)
    finally:
        client.close()
    raise DemoFailure(f"the breaker stayed OPEN for {timeout_s:g}s")


def wait_books(world: World, timeout_s: float = 20.0) -> int:
    """Wait until ingest has published every demo market's book to Redis; returns how many."""
    client = _redis(world)
    keys = [book_key(m.tokens[0]) for m in world.markets.values()]
    deadline = time.monotonic() + timeout_s
    try:
        while client.exists(*keys) < len(keys):
            if time.monotonic() > deadline:
                raise DemoFailure(f"ingest has {client.exists(*keys)} of {len(keys)} books after {timeout_s:g}s")
            time.sleep(0.05)
    finally:
        client.close()
    return len(keys)


def routed_for(world: World, fills: list[LeaderFill], timeout_s: float) -> list[epb.RoutedTrade]:
    """Wait until every followed fill has its routing decision; return them in fill order."""
    assert world.routed is not None
    wanted = Counter(_key(world.leaders[f.leader], f.tx, f.side, f.price, f.size) for f in fills
                     if f.leader in LEADER_NAMES)

    def done(items: list[epb.RoutedTrade]) -> bool:
        have = Counter(_routed_key(r) for r in items)
        return all(have[k] >= n for k, n in wanted.items())

    items = world.routed.wait(done, timeout_s, f"routing decisions for {sum(wanted.values())} leader fills")
    out, used = [], Counter[tuple[str, str, str, Decimal, Decimal]]()
    by_key: dict[Any, list[epb.RoutedTrade]] = defaultdict(list)
    for r in items:
        by_key[_routed_key(r)].append(r)
    for f in fills:
        if f.leader not in LEADER_NAMES:
            continue
        k = _key(world.leaders[f.leader], f.tx, f.side, f.price, f.size)
        out.append(by_key[k][used[k]])
        used[k] += 1
    return out


def terminal_for(world: World, routed: list[epb.RoutedTrade], timeout_s: float) -> dict[str, epb.OrderEvent]:
    """Wait until every order of ``routed`` has a terminal event."""
    assert world.orders is not None
    coids = {o.client_order_id for r in routed for o in r.orders}
    events = world.orders.wait(lambda items: coids <= set(terminal_events(items)), timeout_s,
                               f"terminal events of {len(coids)} orders")
    return terminal_events(events)


def run_session(world: World, out: Printer) -> SessionResult:
    """Play every phase, print its copies, return what happened."""
    p = world.pipeline
    start_taps(world)
    wait_followed(p, [world.leaders[k] for k in LEADER_NAMES])
    result = SessionResult()
    phases = demo_session()
    fills = [f for ph in phases for f in ph.fills]
    followed = sum(1 for f in fills if f.leader in LEADER_NAMES)
    out(f"  {len(fills)} leader fills ({followed} of the three leaders, {len(fills) - followed} of an unfollowed "
        "wallet), each published on RTDS and on the data-api like the venue does. A line per copy:")
    out("  time since the first fill, leader, leader fill, market → follower, copy order → outcome at the venue, "
        "copy latency (frame received by ingest → order POST sent)")
    world.t0_ns = time.time_ns()
    stop_watch = threading.Event()
    watcher = watch_breaker(world, stop_watch)
    try:
        for phase in phases:
            out(f"\n  ▸ {phase.title}")
            if phase.after_breaker:
                waited = wait_breaker_may_probe(world)
                out(f"    (waited {waited:.1f}s: TT_TUNE_EXECUTOR_BREAKER_OPEN_S="
                    f"{p.env.get('TT_TUNE_EXECUTOR_BREAKER_OPEN_S', '60')} in this demo, 60 by default)")
            p.sim.call(_arm_5xx, p.sim.insiders, phase.insiders_5xx)
            if phase.insiders_5xx:
                out(f"    !! the Insiders API answers 503 to the next {phase.insiders_5xx} POSTs")
            seen_states = len(world.breaker_states)
            played = p.sim.run(play_phase(p.sim.sim, world.markets, world.leaders, phase))
            world.played += [(phase, f, t) for f, t in played]
            routed = routed_for(world, phase.fills, 30.0)
            terminal = terminal_for(world, routed, 45.0)
            result.add(phase, routed, terminal)
            if phase.wait_books:
                reasons = Counter(s.reason for r in routed for s in r.skips)
                out(f"    {len(routed)} trades → {sum(len(r.orders) for r in routed)} copies, {sum(reasons.values())} "
                    f"skips ({', '.join(f'{k} {v}' for k, v in reasons.items())}); "
                    f"books on ingest's feed: {wait_books(world)} markets")
            else:
                notes = [f.note for f in phase.fills if f.leader in LEADER_NAMES]
                for line in copy_lines(world, routed, terminal, notes):
                    out(line)
            if len(world.breaker_states) > seen_states:
                out(f"    circuit breaker (tt:breaker:insiders): {' → '.join(world.breaker_states[seen_states:])}")
    finally:
        stop_watch.set()
        watcher.join(2.0)
    return result


def _arm_5xx(insiders: Any, n: int) -> None:
    insiders.faults.fail_posts = n
    insiders.faults.fail_status = 503
