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
from decimal import ROUND_DOWN, Decimal
from typing import Any

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
import redis

from common.config import StorageSettings
from sim.polymarket import SimMarket
from sim.scenarios import LeaderFill, Phase, demo_markets, demo_session, install_markets, play_phase
from tools.demo_rest import DemoFailure, Walker, random_address
from tools.demo_streams import StreamTap, order_tap, routed_tap, terminal_events
from tools.pipeline import Pipeline
from tradingtools.control.v1 import control_pb2 as cpb
from tradingtools.control.v1 import control_pb2_grpc as cgrpc
from tradingtools.execution.v1 import execution_pb2 as epb

Printer = Callable[[str], None]
CENT = Decimal("0.01")
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
                 {"minPrice": "0.05", "maxPrice": "0.95", "copySells": True}),
    FollowerSpec("ben", "sports", LIVE, {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.2", "minOrderUsd": "1",
                                         "maxOrderUsd": "100"}, {"copySells": True, "maxSlippageBps": 300}),
    FollowerSpec("cleo", "politics", LIVE, {"mode": "SIZING_MODE_PERCENT_OF_BALANCE", "percentOfBalance": "2"},
                 {"copySells": True}, funding_usd="2500"),
    FollowerSpec("dan", "crypto", LIVE, {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "10"},
                 {"minPrice": "0.1", "maxPrice": "0.9", "minLeaderTradeUsd": "20",
                  "marketDenylist": ["btc-updown-5m"], "copySells": True}),
    FollowerSpec("eve", "politics", PAPER, {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.25",
                                            "maxOrderUsd": "40"}, {"copySells": True}, perf={"lossStopUsd": "25"}),
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
                follower_wallet_id=world.wallet_ids[f.key], balance_usd=f.funding_usd, as_of=as_of),
                metadata=p.grpc_metadata(), timeout=10)
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
    followed = {world.leaders[k] for k in LEADER_NAMES}
    subs = set(world.subs.values())
    world.routed = routed_tap(p.channel("router"), keep=lambda r: r.trade.wallet.lower() in followed).start()
    world.orders = order_tap(p.channel("executor"), keep=lambda e: e.subscription_id in subs).start()


def watch_breaker(world: World, stop: threading.Event) -> threading.Thread:
    """Record the Insiders breaker's state changes (mirrored by the executor in Redis)."""
    client = redis.Redis.from_url(StorageSettings.from_env(world.pipeline.env).redis_url.value, decode_responses=True)

    def run() -> None:
        last = ""
        try:
            while not stop.is_set():
                h = client.hgetall("tt:breaker:INSIDERS")
                state = f"{h.get('state', 'CLOSED')}" + (f" ({h.get('failures')} failures)" if h.get("state") == "OPEN"
                                                          else "")
                if h and state != last:
                    world.breaker_states.append(state)
                    last = state
                stop.wait(0.02)
        finally:
            client.close()

    thread = threading.Thread(target=run, name="breaker-watch", daemon=True)
    thread.start()
    return thread


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
    world.t0_ns = time.time_ns()
    for phase in demo_session():
        out(f"\n  ▸ {phase.title}")
        stop_watch = threading.Event()
        watcher = watch_breaker(world, stop_watch) if phase.insiders_5xx else None
        if phase.insiders_5xx:
            p.sim.call(_arm_5xx, p.sim.insiders, phase.insiders_5xx)
            out(f"    !! the Insiders API answers 503 to the next {phase.insiders_5xx} POSTs")
        played = p.sim.run(play_phase(p.sim.sim, world.markets, world.leaders, phase))
        world.played += [(phase, f, t) for f, t in played]
        routed = routed_for(world, phase.fills, 30.0)
        terminal = terminal_for(world, routed, 45.0)
        if watcher is not None:
            stop_watch.set()
            watcher.join(2.0)
        result.add(phase, routed, terminal)
        for line in copy_lines(world, routed, terminal):
            out(line)
        if phase.insiders_5xx:
            out(f"    breaker INSIDERS: {' → '.join(['CLOSED', *world.breaker_states]) or 'CLOSED'}")
    return result


def _arm_5xx(insiders: Any, n: int) -> None:
    insiders.faults.fail_posts = n
    insiders.faults.fail_status = 503


# -- lines and summary ------------------------------------------------------------------------


@dataclass
class SessionResult:
    """Decisions and outcomes of the whole session."""

    routed: list[epb.RoutedTrade] = field(default_factory=list)
    terminal: dict[str, epb.OrderEvent] = field(default_factory=dict)
    by_phase: dict[str, list[epb.RoutedTrade]] = field(default_factory=dict)

    def add(self, phase: Phase, routed: list[epb.RoutedTrade], terminal: dict[str, epb.OrderEvent]) -> None:
        self.routed += routed
        self.terminal.update(terminal)
        self.by_phase[phase.name] = routed

    def orders(self) -> list[tuple[epb.RoutedTrade, epb.Order]]:
        return [(r, o) for r in self.routed for o in r.orders]


def _d(text: str) -> str:
    return format(Decimal(text or "0").normalize(), "f")


def _money(text: str) -> str:
    return f"${Decimal(text or '0').quantize(CENT)}"


def copy_lines(world: World, routed: list[epb.RoutedTrade], terminal: dict[str, epb.OrderEvent]) -> list[str]:
    """One line per copy (or skip) of each routed leader trade."""
    lines: list[str] = []
    slugs, names = world.slug_by_asset, world.sub_key
    posts = world.pipeline.sim.call(lambda: Counter(
        (r.client_order_id, r.outcome) for r in world.pipeline.sim.insiders.posts))
    for r in routed:
        t = r.trade
        side = "BUY " if t.side == 1 else "SELL"
        at = (t.received_time_ns - world.t0_ns) / 1e9
        head = (f"    {at:6.2f}s {world.leader_key(t.wallet):<8} {side} {_d(t.size):>5}@{_d(t.price):<4} "
                f"{slugs.get(t.asset_id, t.asset_id[:10])[:22]:<22}")
        for o in r.orders:
            who = names.get(o.subscription_id, "?").capitalize()
            what = f"BUY {_money(o.amount_usd)}" if o.side == 1 else f"SELL {_d(o.size)} sh"
            e = terminal.get(o.client_order_id)
            lines.append(f"{head} → {who:<4} {what:<13} → {_outcome(e, posts, o)}")
        for s in r.skips:
            who = names.get(s.subscription_id, "?").capitalize()
            lines.append(f"{head} → {who:<4} skipped {s.reason}: {s.detail[:70]}")
    return lines


def _outcome(e: epb.OrderEvent | None, posts: Counter[tuple[str, str]], o: epb.Order) -> str:
    if e is None:
        return "NO TERMINAL EVENT"
    kind = epb.OrderEventType.Name(e.type).removeprefix("ORDER_EVENT_TYPE_")
    venue = "paper" if o.mode == 2 else "insiders"
    faults = posts[(o.client_order_id, "fault")]
    retry = f", after {faults} × 503" if faults else ""
    latency = f"  {Decimal(e.copy_latency_ms).quantize(Decimal('0.1'))} ms" if e.copy_latency_ms else ""
    if e.type == epb.ORDER_EVENT_TYPE_FILLED:
        return f"{kind} {_d(e.filled_size)}@{_d(e.avg_price)} {venue}{retry}{latency}"
    return f"{kind} {e.reason}{retry}: {e.detail[:60]}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(world: World, result: SessionResult, out: Printer) -> dict[str, Any]:
    """The summary table, skips by reason (PostgreSQL ``copy_skips``) and latency percentiles."""
    names = world.sub_key
    rows: dict[str, Counter[str]] = {k: Counter() for k in world.subs}
    spent: dict[str, Decimal] = defaultdict(Decimal)
    for _r, o in result.orders():
        key = names[o.subscription_id]
        e = result.terminal[o.client_order_id]
        rows[key]["copies"] += 1
        rows[key]["filled" if e.type == epb.ORDER_EVENT_TYPE_FILLED else "not filled"] += 1
        if e.type == epb.ORDER_EVENT_TYPE_FILLED:
            notional = Decimal(e.filled_size or "0") * Decimal(e.avg_price or "0")
            spent[key] += notional if o.side == 1 else -notional
    for r in result.routed:
        for s in r.skips:
            rows[names[s.subscription_id]]["skipped"] += 1
    out("\n  follower  leader    mode   sizing                          copies  filled  not filled  skipped  net USD")
    for key, c in rows.items():
        f = world.followers[key]
        out(f"  {f.name:<9} {f.leader:<9} {f.mode.removeprefix('EXECUTION_MODE_'):<6} {f.describe()[5:]:<31} "
            f"{c['copies']:>6}  {c['filled']:>6}  {c['not filled']:>10}  {c['skipped']:>7}  "
            f"{spent[key].quantize(CENT):>7}")
    stored = skips_in_postgres(world)
    streamed = Counter(s.reason for r in result.routed for s in r.skips)
    rejected = Counter(e.reason for e in result.terminal.values() if e.type != epb.ORDER_EVENT_TYPE_FILLED)
    out("  skips by reason (PostgreSQL copy_skips): "
        + ", ".join(f"{k} {v}" for k, v in sorted(stored.items(), key=lambda kv: -kv[1])))
    out("  not filled by the executor: " + (", ".join(f"{k} {v}" for k, v in rejected.items()) or "none"))
    latencies = [float(e.copy_latency_ms) for e in result.terminal.values()
                 if e.type == epb.ORDER_EVENT_TYPE_FILLED and e.copy_latency_ms]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    out(f"  copy latency, leader frame received by ingest → order POST sent: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies, default=0):.1f} ms (n={len(latencies)})")
    return {"stored_skips": stored, "streamed_skips": streamed, "rejected": rejected, "latencies": latencies}


def skips_in_postgres(world: World) -> Counter[str]:
    """Skip reasons recorded in ``copy_skips`` for this run's subscriptions."""
    url = StorageSettings.from_env(world.pipeline.env).database_url.value
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT reason, count(*) FROM copy_skips WHERE subscription_id = ANY(%s) GROUP BY reason",
                            (list(world.subs.values()),)).fetchall()
    return Counter({reason: int(n) for reason, n in rows})


def floor_cents(value: Decimal) -> Decimal:
    """Round down to the cent."""
    return value.quantize(CENT, rounding=ROUND_DOWN)
