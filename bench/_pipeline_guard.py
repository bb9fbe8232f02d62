"""(e) of ``bench pipeline``: armed triggers in bulk, price ticks at 10,000/s, a CLOB move → the SELL POST.

``N`` ARMED triggers over ``A`` assets (positions + triggers written with COPY, as ``bench/guard.py``
seeds them, the trailing stops with a stored high-water mark of 0.50); every two seeded assets form one
simulated market (CLOB REST knows it, each token has a 10-level book). Guard is restarted (kill -9; the
supervisor starts it again) so it loads them all (timed, from its log); ingest then follows every armed
asset on the simulated CLOB websocket.

Background load, through the real path (simulator CLOB websocket → ingest → Redis → guard): ``rate``
top-of-book changes per second over the seeded assets, one ``price_change`` frame per market move
carrying both tokens (each token's book moves one tick: new best level in, far level out, like the
venue's paired entries), i.e. ``rate`` / 2 frames and ``rate`` PriceTicks per second. The walks cross
some seeded triggers, whose SELLs also go out.

Measured crossings, during that load: ``hot`` extra sim markets each with one held position and one
STOP_LOSS at 0.45 on its best bid; one at a time the simulator replaces the book around a best bid of
0.44 (one ``book`` frame). ``sim→POST`` = the Insiders fake's arrival time of that asset's SELL POST −
the wall time just before the frame was sent (stricter than "frame received by ingest");
``ingest→POST`` = the same arrival − ingest's receive stamp carried in guard's FIRED event (also for
the seeded triggers the walk crossed). Also: achieved tick rate (top-of-book changes the walks made, and the
entries added to the PriceTick log: ingest logs only those guard's price bands say may matter), guard's tick
lag (its stats log: ingest receive → handled, i.e. the backlog), CPU per background tick (per change, logged
or not) of each process, guard's RSS. Then, with the ticks still running, ``bench hops --chain guard`` (its own
processes, the stack's Redis and PostgreSQL) measures the bare transports of a SELL's hops, one message
every 5 ms and every 100 ms (the crossings' spacing; ends idle that long wake slower): the transport
floor of ingest→POST under that load, to set the measured figures against (``TT_BENCH_FLOOR=0`` skips it).

Walks: ``TT_BENCH_WALK=inside`` (default: the issue's load, 10,000 ticks/s over the armed triggers) keeps
each best bid in [0.47, 0.52], where no seeded trigger fires (the ticks alone; only the measured crossings
sell). ``TT_BENCH_WALK=crossing`` is a sell-off on top: each best bid wanders over [0.12, 0.88], so the walks
cross seeded take-profits, stop-losses and trailing stops (200+ SELLs a second through guard, the executor,
PostgreSQL and the fake); on 2 cores that saturates the machine and guard's tick backlog grows until ticks
go stale (2 s), so its figures say how guard degrades, not what a SELL costs at the tick load.

Tuning: ``TT_BENCH_TICK_RATE`` (background ticks/s, default 10000; 0 = no load), ``TT_BENCH_MEASURE_S``
(cap of the crossing phase, default 60 s), ``TT_BENCH_PYSPY=<dir>`` (py-spy profiles of ingest, guard
and the executor during the measurement).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import redis as redis_sync

from bench import CpuMeter, memory_mb, process_cpu_s, storage_pids, summarize
from bench._pipeline_guard_readings import (
    _floor_under_load,
    _guard_lags,
    _guard_load_s,
    _hot_stages,
    _ingest_to_post,
    _last_stats,
    _med,
    _pids,
    _profile,
    _quiet_cpu,
    e_target,
    fire_cpu_ms,
)
from bench._triggers import SEEDED_COST, SEEDED_SIZE, asset_id, seed_triggers, seeded_positions
from common.streams import PRICE_TICKS
from sim.scenarios import set_best_bid

LEVELS = 10
LEVEL_SIZE = "1000"
# best-bid bounds (cents) of the background walks: "inside" stays where no seeded trigger fires
WALKS = {"crossing": (12, 88), "inside": (47, 52)}


class _Walks:
    """Books of the background markets in the simulator, moved one tick at a time (run on the sim loop)."""

    def __init__(self, sim: Any, markets: list[tuple[str, str, str]], rng: random.Random, *,
                 lo_cents: int = 12, hi_cents: int = 88) -> None:
        self.sim = sim
        self.lo, self.hi = lo_cents, hi_cents  # the best bid stays within [lo, hi] cents
        self.markets = markets  # (condition id, token 0, token 1)
        self.price = {t: 49 for _c, a, b in markets for t in (a, b)}  # add_market's best bid
        self.rng = rng
        self._hashes = itertools.count(rng.getrandbits(40))

    def _move(self, token: str) -> list[dict[str, str]]:
        """One token's best bid moves one cent (up or down); the book keeps ``LEVELS`` a side.

        Runs 5,000 times a second on the machine under test: strings and Decimal keys come from tables, and
        each entry's (opaque) hash is a counter, not a random draw."""
        p = self.price[token]
        up = p <= self.lo or (p < self.hi and self.rng.random() < 0.5)
        book = self.sim.books.books[token]
        bids, asks = book.bids, book.asks
        s = LEVEL_SIZE
        if up:  # bid p+1 in, bid p-9 out; ask p+1 out, ask p+11 in
            bids[_CENTS[p + 1]] = _SIZE
            bids.pop(_CENTS[p - LEVELS + 1], None)
            asks.pop(_CENTS[p + 1], None)
            asks[_CENTS[p + LEVELS + 1]] = _SIZE
            edits = (("BUY", p + 1, s), ("BUY", p - LEVELS + 1, "0"), ("SELL", p + 1, "0"),
                     ("SELL", p + LEVELS + 1, s))
            p += 1
        else:  # bid p out, bid p-10 in; ask p in, ask p+10 out
            bids.pop(_CENTS[p], None)
            bids[_CENTS[p - LEVELS]] = _SIZE
            asks[_CENTS[p]] = _SIZE
            asks.pop(_CENTS[p + LEVELS], None)
            edits = (("BUY", p, "0"), ("BUY", p - LEVELS, s), ("SELL", p, s), ("SELL", p + LEVELS, "0"))
            p -= 1
        self.price[token] = p
        # the book's own top, as the venue's hints are: add_market leaves the mid empty (best ask p + 2) until a
        # token first moves up, and hints of p + 1 would tell ingest its book missed a change
        best_bid, best_ask = _TEXT[max(bids)], _TEXT[min(asks)]
        n = next(self._hashes)
        return [{"asset_id": token, "price": _PX[cents], "size": size_s, "side": side,
                 "hash": f"{n:012x}{i:04x}", "best_bid": best_bid, "best_ask": best_ask}
                for i, (side, cents, size_s) in enumerate(edits)]

    def frame(self) -> tuple[str, str]:
        """One market move: (token 0, frame text) with both tokens' entries."""
        cid, a, b = self.markets[self.rng.randrange(len(self.markets))]
        now = str(int(time.time() * 1000))
        text = orjson.dumps({"market": cid, "price_changes": self._move(a) + self._move(b),
                             "timestamp": now, "event_type": "price_change"}).decode()
        return a, text


_CENTS = {c: Decimal(c) / 100 for c in range(101)}
_PX = [f"0.{c:02d}" for c in range(101)]
_TEXT = {_CENTS[c]: _PX[c] for c in range(1, 100)}  # a level's price (any Decimal spelling) -> its wire text
_SIZE = Decimal(LEVEL_SIZE)


async def _background(sim: Any, walks: _Walks, rate: float, stop: threading.Event,
                      progress: dict[str, int] | None = None) -> dict[str, Any]:
    """``rate`` ticks/s (``rate`` / 2 frames of two tokens) until ``stop``; paced every 2 ms (``progress``: the
    frames sent so far, kept current)."""
    clob = sim.clob
    frames_per_s = rate / 2
    step_s = 0.002
    start = time.perf_counter()
    sent = 0
    while not stop.is_set():
        due = int((time.perf_counter() - start) * frames_per_s)
        while sent < due:
            token, text = walks.frame()
            for client in clob.clients:
                if token in client.subs:
                    client.send(text)
            sent += 1
        if progress is not None:
            progress["frames"] = sent
        await asyncio.sleep(step_s)
    elapsed = time.perf_counter() - start
    return {"frames": sent, "elapsed_s": round(elapsed, 2), "frames_per_s": round(sent / elapsed)}




def scenario_e(b: Any, n_triggers: int, n_assets: int, hot: int, *, rate: float | None = None,
               warmup_s: float = 3.0) -> dict[str, Any]:
    """Seed, restart guard, background ticks at ``rate``/s, fire ``hot`` stop-losses one at a time."""
    if rate is None:
        rate = float(os.environ.get("TT_BENCH_TICK_RATE", "10000"))
    p = b.p
    db_url = (p.run_dir / "database_url").read_text().strip()
    r = redis_sync.Redis.from_url((p.run_dir / "redis_url").read_text().strip())
    markets = [b.market() for _ in range(hot)]
    started = time.monotonic()
    n_assets -= n_assets % 2
    if n_triggers:
        # Trailing stops with the mark a guard that ran before would have stored (the walks start at 0.50): a
        # restart loads them active. Seeded without one, the first ticks would activate all 20,000 at once, a
        # burst a running system sees only when that many stops were created just before a restart.
        seed_triggers(db_url, n_triggers, n_assets, random.Random(5), trailing_mark=Decimal("0.50"))
    pairs = [(f"0x{0xe0000000 + i:064x}", asset_id(i), asset_id(i + 1)) for i in range(0, n_assets, 2)]

    def add_markets() -> None:
        for cid, t0, t1 in pairs:
            p.sim.sim.add_market(condition_id=cid, tokens=(t0, t1), levels=LEVELS, level_size=LEVEL_SIZE)

    p.sim.call(add_markets, timeout_s=120)
    now = datetime.now(UTC)
    with psycopg.connect(db_url) as conn:
        for i, m in enumerate(markets):
            wallet, wid = "0x" + f"{0xbeef0000 + i:040x}", f"w_hot_{i}"
            conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                         " cost_usd) VALUES (%s, %s, %s, %s, 100, 0.5, 50)", (wid, m.tokens[0], m.condition_id, wallet))
            conn.execute("INSERT INTO triggers (id, wallet, follower_wallet_id, asset_id, kind, trigger_price,"
                         " sell_fraction, price_source, state, source, create_time, update_time) VALUES"
                         " (%s, %s, %s, %s, 'STOP_LOSS', 0.45, 1, 'BEST_BID', 'ARMED', 'MANUAL', %s, %s)",
                         (f"trg_hot_{i}", wallet, wid, m.tokens[0], now, now))
        conn.commit()
    held = [(f"w_{k}", a) for k, a in seeded_positions(n_triggers, n_assets)] if n_triggers else []
    held += [(f"w_hot_{i}", m.tokens[0]) for i, m in enumerate(markets)]

    def give_holdings() -> None:  # the venue holds what the seeded rows book: reconciliation finds them agreeing
        positions = p.sim.insiders.holdings.positions
        for wallet_id, token in held:
            positions.setdefault(wallet_id, {})[token] = [SEEDED_SIZE, SEEDED_COST]

    p.sim.call(give_holdings, timeout_s=120)
    seed_s = time.monotonic() - started
    p.once_env("guard", {"TT_TUNE_GUARD_STATS_LOG_S": "2"})
    p.wait_restarted("guard", p.kill("guard"), timeout_s=120)
    load_s = None
    deadline = time.monotonic() + 120
    while load_s is None and time.monotonic() < deadline:
        load_s = _guard_load_s(p.log_tail("guard", 400))
        time.sleep(0.1)

    wanted = {m.tokens[0] for m in markets} | {t for _c, a, b_ in pairs for t in (a, b_)}

    def subscribed() -> bool:
        subs: set[str] = set()
        for client in list(p.sim.sim.clob.clients):
            subs |= set(getattr(client, "subs", ()))
        return wanted <= subs

    deadline = time.monotonic() + 60
    while not p.sim.call(subscribed) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # snapshots in, guard has a first price

    # background load in its own thread (it blocks on the simulator's loop)
    stop = threading.Event()
    walk = os.environ.get("TT_BENCH_WALK", "inside")
    if walk not in WALKS:
        raise ValueError(f"TT_BENCH_WALK must be one of {sorted(WALKS)}, got {walk!r}")
    walks = _Walks(p.sim.sim, pairs, random.Random(9), lo_cents=WALKS[walk][0], hi_cents=WALKS[walk][1])
    bg: dict[str, Any] = {}
    progress = {"frames": 0}
    pids = _pids(p)
    xlen0 = r.xlen(PRICE_TICKS)
    thread = threading.Thread(target=lambda: bg.update(p.sim.run(_background(p.sim.sim, walks, rate, stop, progress),
                                                                 timeout_s=3600)), daemon=True)
    if rate > 0:
        thread.start()
    time.sleep(warmup_s)
    profilers = _profile(pids, 8.0)
    storage = CpuMeter(storage_pids(p.run_dir))  # PostgreSQL backends and Redis do part of the work
    storage.start()
    cpu0 = {n: process_cpu_s(pid) or 0.0 for n, pid in pids.items()}
    xlen1, t_meas, since_ms = r.xlen(PRICE_TICKS), time.perf_counter(), int(time.time() * 1000)
    frames1 = progress["frames"]
    load_samples = [os.getloadavg()[0]]

    samples: list[float] = []
    sent_at: dict[str, int] = {}
    missing = 0
    measure_until = time.monotonic() + float(os.environ.get("TT_BENCH_MEASURE_S", "60"))
    for m in markets:
        if time.monotonic() > measure_until:  # bounded: a lagging guard would make every crossing wait 3 s
            break
        token = m.tokens[0]
        n_posts = p.sim.call(lambda: len(p.sim.insiders.posts))

        def move(m: Any = m) -> int:
            t = time.time_ns()
            set_best_bid(p.sim.sim, m, "0.44")
            return t

        sent = p.sim.call(move)
        sent_at[token] = sent
        got = None
        deadline = time.monotonic() + 3
        while got is None and time.monotonic() < deadline:
            got = p.sim.call(lambda token=token, n=n_posts: next(
                (q.arrival_ns for q in p.sim.insiders.posts[n:]
                 if (q.body or {}).get("tokenId") == token and (q.body or {}).get("side") == "SELL"), None))
            if got is None:
                time.sleep(0.005)
        if got is None:
            missing += 1
        else:
            samples.append((got - sent) / 1e6)
        load_samples.append(os.getloadavg()[0])
        time.sleep(0.1)
    meas_s = time.perf_counter() - t_meas
    cpu1 = {n: process_cpu_s(pid) or 0.0 for n, pid in pids.items()}
    frames2 = progress["frames"]
    for name, used_s in storage.stop().items():
        cpu0[name], cpu1[name], pids[name] = 0.0, used_s, 0
    xlen2 = r.xlen(PRICE_TICKS)
    quiet = _quiet_cpu(p, pids, progress, float(os.environ.get("TT_BENCH_QUIET_S", "15"))) if rate > 0 else None
    floor = _floor_under_load(p) if rate > 0 and os.environ.get("TT_BENCH_FLOOR", "1") != "0" else None
    stop.set()
    if rate > 0:
        thread.join(30)
    for prof in profilers:
        prof.wait(30)
    ticks = max(0, xlen2 - xlen1)
    # a background tick: one top-of-book change (each frame moves both tokens of its market), logged or not
    bg_ticks = 2 * (frames2 - frames1) if rate > 0 else ticks
    cpu_us_per_tick = {n: round((cpu1[n] - cpu0[n]) * 1e6 / max(bg_ticks, 1), 1) for n in pids}
    cpu_cores = {n: round((cpu1[n] - cpu0[n]) / meas_s, 2) for n in pids}
    time.sleep(1.0)
    ingest_ms, hot_ingest_ms = _ingest_to_post(p, r, {m.tokens[0] for m in markets})
    stages = _hot_stages(p, db_url)
    guard_log = p.log_tail("guard", 3000)
    lags = _guard_lags(guard_log, since_ms)
    guard_pid = pids.get("guard", 0)
    r.close()
    hot_latency = summarize(hot_ingest_ms)
    return {"triggers": n_triggers + hot, "assets": n_assets + hot, "seed_s": round(seed_s, 1),
            "guard_load_s": load_s, "hot_planned": hot, "fired": len(samples), "missing": missing,
            "background": {**bg, "walk": walk, "rate_target": rate, "ticks_during_measure": bg_ticks,
                           "ticks_per_s_achieved": round(bg_ticks / meas_s), "ticks_logged_during_measure": ticks,
                           "logged_per_s": round(ticks / meas_s), "measure_s": round(meas_s, 1),
                           "ticks_logged_total": xlen2 - xlen0},
            "guard_tick_lag_ms": {"p50_of_p50s": _med([x for x, _ in lags]), "max_p99": max((y for _, y in lags),
                                                                                            default=None),
                                  "p50_series": [round(x) for x, _ in lags],
                                  "p99_series": [round(y, 1) for _, y in lags]},
            "cpu_us_per_tick": cpu_us_per_tick,
            "cpu_us_per_tick_total": round(sum(v for n, v in cpu_us_per_tick.items() if n != "bench+sim"), 1),
            "cpu_cores": cpu_cores,
            "background_alone": quiet,
            "cpu_ms_per_fire": fire_cpu_ms(cpu_us_per_tick, (quiet or {}).get("cpu_us_per_tick", {}), bg_ticks,
                                           len(samples) + len(ingest_ms)) if quiet else {},
            "guard_rss_mb": round(memory_mb(guard_pid).get("VmRSS", 0.0), 1), "guard_stats": _last_stats(guard_log),
            "ticks_log_capped": xlen2 >= 950_000,
            "latency": {"hot: sim frame→SELL POST": summarize(samples),
                        "hot: ingest→SELL POST": hot_latency,
                        "walk fires: ingest→SELL POST": summarize(ingest_ms),
                        **{f"hot: {k}": summarize(v) for k, v in stages.items()}},
            "transport_floor_under_load": floor, "target": e_target(hot_latency["p99_ms"], floor),
            "load1_max": round(max(load_samples), 2), "load_at_end": [round(x, 2) for x in os.getloadavg()]}










