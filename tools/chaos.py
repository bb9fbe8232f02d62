"""Chaos run: copies under load while every layer, Redis and PostgreSQL crash, counted at the Insiders fake.

Several LIVE followers (FIXED_USD) of several leaders, each leader trading in its own deep market; the
leader trades stream in on RTDS and are also listed by the data-api. While they stream, the plan's faults
run one after the other, spread over the stream (:data:`FAULTS`):

- a program (``ingest`` … ``control``): kill -9; the stack's supervisor starts it again;
- ``redis``: kill -9 of the embedded Redis, started again on the same address from its append-only file.
  Its page cache survives, so this loses nothing Redis acknowledged: it proves the reload and every
  service's reconnection, not durability;
- ``redis-lossy``: the same, but the append-only file is cut back to its size ``redis_loss_s`` before the
  kill first: what a crash of Redis' machine loses under ``appendfsync everysec`` (writes of the last second
  never fsynced), or a failover to a replica that lagged, while the services keep running;
- ``postgres``: ``pg_ctl restart -m immediate`` (no checkpoint; the restart replays the WAL);
- ``machine``: once the copies so far are in, the executor falls behind (stopped for ``executor_lag_s``)
  while the router goes on routing, then everything crashes at once: kill -9 of every service, Redis'
  append-only file cut back as for ``redis-lossy``, PostgreSQL crash restarted. The routed trades the
  executor had not admitted are exactly what Redis loses (the router appends them again from PostgreSQL).

The count is made at the Insiders fake, per Idempotency-Key: the key every copy must have is derived from
the trade the simulator published (ingest's leader-trade identity and the router's client order id are both
deterministic), so a copy made twice under another key shows up as an unexpected key, and a key POSTed again
(a resumed order, answered with the first order) is told apart from one created twice. Expected = leader
trades × their leader's followers − the skips the router recorded for them (PostgreSQL ``copy_skips``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from common.decimals import fmt
from services.ingest.identity import event_id
from services.router.domain.decide import client_order_id
from sim.polymarket import SimMarket, SimTrade
from tools.pipeline import Pipeline, PipelineError

Printer = Callable[[str], None]
SERVICES = ("ingest", "router", "executor", "guard", "control")
FAULTS = (*SERVICES, "redis", "redis-lossy", "postgres", "machine")
FIXED_USD = {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "5"}


@dataclass(frozen=True)
class ChaosPlan:
    """What a chaos run does: ``faults`` (names from :data:`FAULTS`) in order, spread evenly over the stream of
    ``trades`` leader trades at ``rate_per_s``."""

    leaders: int = 3
    followers_per_leader: int = 3
    trades: int = 300
    rate_per_s: float = 10.0
    faults: tuple[str, ...] = ("ingest", "router", "executor", "redis", "guard", "control", "postgres", "router",
                               "executor", "machine")
    redis_down_s: float = 1.0  # how long a killed Redis stays down
    redis_loss_s: float = 1.0  # redis-lossy, machine: the append-only file loses what it got in this last while
    executor_lag_s: float = 2.0  # machine: how far the executor is behind when the machine crashes
    settle_timeout_s: float = 90.0  # after the last fault

    def __post_init__(self) -> None:
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; have {', '.join(FAULTS)}")


# make test: ~30 s of trades; bench chaos: 2 minutes, every fault three times
SHORT = ChaosPlan()
LONG_ROUND = ("ingest", "router", "redis", "executor", "guard", "postgres", "control", "redis-lossy", "machine")
LONG = ChaosPlan(trades=1800, rate_per_s=15.0, faults=LONG_ROUND * 3)


@dataclass
class Fault:
    """One fault as it happened (wall-clock ns)."""

    name: str
    at_ns: int  # the kill
    done_ns: int = 0  # what was killed runs again (Redis, PostgreSQL) or was handed to the supervisor
    trades_before: int = 0
    aof_cut_bytes: int = 0  # redis-lossy, machine: what the append-only file lost


@dataclass
class ChaosResult:
    """The count at the Insiders fake."""

    trades: int
    leaders: int
    followers: int  # in all
    expected: int
    posted: int  # expected keys the fake created an order for
    missing: list[str]  # expected keys it never created
    unexpected: list[str]  # keys of these followers' orders nobody expected (a copy made twice under a new key)
    doubled: list[str]  # keys the fake created more than once (it must never: replays return the first)
    reposted: int  # keys POSTed more than once (a resumed order's POST, answered with the first order)
    skips: dict[str, int]
    faults: list[Fault]
    settle_s: float  # last fault → last copy created (0 when every copy was in before it)
    kills: dict[str, int] = field(default_factory=dict)  # per service, by the plan
    restarts: dict[str, int] = field(default_factory=dict)  # per service, by the supervisor

    @property
    def ok(self) -> bool:
        """Every expected copy created once, nothing else."""
        return not (self.missing or self.unexpected or self.doubled) and self.posted == self.expected

    def summary(self) -> str:
        """One line of figures."""
        kinds = dict(Counter(f.name for f in self.faults))
        return (f"chaos: {self.trades} trades of {self.leaders} leaders, {self.followers} followers: expected "
                f"{self.expected} copies ({sum(self.skips.values())} skipped{f' {self.skips}' if self.skips else ''}), "
                f"posted {self.posted}, missing "
                f"{len(self.missing)}, doubled {len(self.doubled) + len(self.unexpected)}, keys POSTed again "
                f"{self.reposted}; faults {kinds}; last copy {self.settle_s:.1f}s after the last fault; "
                f"restarts {self.restarts}")

    def as_dict(self) -> dict[str, Any]:
        """For a result file (first keys of each failure only)."""
        out = asdict(self)
        for key in ("missing", "unexpected", "doubled"):
            out[key] = {"count": len(out[key]), "first": out[key][:10]}
        return out


def copy_key(trade: SimTrade, wallet_id: str) -> str:
    """The Idempotency-Key of ``wallet_id``'s copy of a simulator trade (occurrence 0 of its content)."""
    lt_id = event_id((trade.tx_hash, trade.wallet.lower(), trade.asset, trade.side, fmt(Decimal(trade.price)),
                      fmt(Decimal(trade.size))), 0)
    return client_order_id(lt_id, wallet_id, trade.asset)


class AofTail:
    """The size of Redis' append-only file over time, sampled every ``interval_s``, to cut the file back to what
    a machine crash under ``appendfsync everysec`` could leave of it (the writes of the last second)."""

    def __init__(self, path: Path, interval_s: float = 0.01) -> None:
        self.path = path
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aof-tail", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), os.stat(self.path).st_size))
            self._stop.wait(self.interval_s)

    def cut_back(self, loss_s: float) -> int:
        """Truncate the file (Redis is down) to its size ``loss_s`` ago; returns the bytes cut. Redis loads a
        file that ends inside a command (or a MULTI without EXEC) up to the last whole one."""
        when = time.monotonic() - loss_s
        size = max((s for t, s in self.samples if t <= when), default=0)
        now = os.stat(self.path).st_size
        if size < now:
            os.truncate(self.path, size)
        self.samples = [(t, min(s, size)) for t, s in self.samples]
        return max(0, now - size)


@dataclass
class _Follower:
    leader: str
    wallet_id: str
    sub_id: str


class ChaosRun:
    """Sets the followers up, streams the trades, runs the faults, counts (see the module docstring)."""

    def __init__(self, p: Pipeline, plan: ChaosPlan, out: Printer = print) -> None:
        self.p = p
        self.plan = plan
        self.out = out
        self.followers: list[_Follower] = []
        self.markets: dict[str, SimMarket] = {}
        self.trades: list[SimTrade] = []
        self.faults: list[Fault] = []
        self.aof = AofTail(p.paths.redis_dir / "appendonly.aof")
        self._stream_error: Exception | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Markets, leaders and their LIVE followers (through Envoy); returns once ingest follows them all."""
        leaders = ["0x" + secrets.token_hex(20) for _ in range(self.plan.leaders)]
        with self.p.rest(timeout_s=30) as rest:
            for leader in leaders:
                self.markets[leader] = self.p.sim.call(self.p.sim.sim.add_market, levels=5, level_size="2000000")
                for _ in range(self.plan.followers_per_leader):
                    wallet = f"w_{secrets.token_hex(6)}"
                    body = {"followerUserId": f"u_{wallet}", "followerWalletId": wallet,
                            "followerProxy": "0x" + secrets.token_hex(20), "leaderProxy": leader,
                            "mode": "EXECUTION_MODE_LIVE", "sizing": FIXED_USD, "filters": {"copySells": True}}
                    reply = rest.post("/subscriptions", json=body)
                    if reply.status_code != 200:
                        raise PipelineError(f"subscription: {reply.status_code} {reply.text}")
                    self.followers.append(_Follower(leader, wallet, str(reply.json()["id"])))
        deadline = time.monotonic() + 60
        while not set(leaders) <= self.p.sim.call(lambda: {q.get("user") for _p, q in self.p.sim.sim.data.requests}):
            if time.monotonic() > deadline:
                raise PipelineError("ingest does not follow every leader")
            time.sleep(0.1)

    # -- the run --------------------------------------------------------------------------------

    def _stream(self) -> None:
        try:
            leaders = list(self.markets)
            start = time.monotonic()
            for n in range(self.plan.trades):
                time.sleep(max(0.0, start + n / self.plan.rate_per_s - time.monotonic()))
                leader = leaders[n % len(leaders)]
                market = self.markets[leader]
                self.trades.append(self.p.sim.call(
                    self.p.sim.sim.trade, leader, market=market, token=market.tokens[0], price="0.51",
                    size=str(40 + n), tx="0x" + secrets.token_hex(32)))
        except Exception as exc:  # noqa: BLE001 - reported by run()
            self._stream_error = exc

    def _fault(self, name: str) -> Fault:
        fault = Fault(name, time.time_ns(), trades_before=len(self.trades))
        if name in ("redis", "redis-lossy"):
            self.p.kill_redis()
            if name == "redis-lossy":
                fault.aof_cut_bytes = self.aof.cut_back(self.plan.redis_loss_s)
            time.sleep(self.plan.redis_down_s)
            self.p.restart_redis()
        elif name == "postgres":
            self.p.crash_postgres()
        elif name == "machine":
            self._caught_up()  # the router routes while the executor lags: what the crash must not lose
            self._wait_running("executor")
            os.kill(int(self.p.program("executor")["pid"]), signal.SIGSTOP)  # SIGKILL below ends it stopped
            time.sleep(self.plan.executor_lag_s)
            fault.at_ns = time.time_ns()
            for prog in SERVICES:
                with contextlib.suppress(PipelineError):  # one still in its restart backoff
                    self.p.kill(prog)
            self.p.kill_redis()
            fault.aof_cut_bytes = self.aof.cut_back(self.plan.redis_loss_s)
            self.p.crash_postgres()
            self.p.restart_redis()
        else:
            self._wait_running(name)
            fault.at_ns = time.time_ns()
            self.p.kill(name)
        fault.done_ns = time.time_ns()
        self.out(f"  {name} at trade {fault.trades_before} ({(fault.done_ns - fault.at_ns) / 1e9:.2f}s"
                 + (f", {fault.aof_cut_bytes} bytes cut from the append-only file)" if fault.aof_cut_bytes else ")"))
        return fault

    def _caught_up(self, timeout_s: float = 30.0) -> None:
        """Until every copy of the trades streamed so far was created (or ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while not self._expected() <= self._created() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _wait_running(self, name: str, timeout_s: float = 60.0) -> None:
        """Until the supervisor runs ``name`` (a program killed moments ago may still be in its backoff)."""
        deadline = time.monotonic() + timeout_s
        while (state := self.p.program(name)["state"]) != "running":
            if state == "errored" or time.monotonic() > deadline:
                raise PipelineError(f"{name} is not running ({state}):\n{self.p.log_tail(name)}")
            time.sleep(0.05)

    def run(self) -> ChaosResult:
        """Stream the trades with the faults spread over them; wait for the copies; count."""
        before = {name: int(self.p.program(name)["restarts"]) for name in SERVICES}
        streamer = threading.Thread(target=self._stream, name="chaos-trades", daemon=True)
        duration = self.plan.trades / self.plan.rate_per_s
        started = time.monotonic()
        streamer.start()
        self.aof.start()
        try:
            for k, name in enumerate(self.plan.faults):
                time.sleep(max(0.0, started + duration * (k + 1) / (len(self.plan.faults) + 1) - time.monotonic()))
                self.faults.append(self._fault(name))
        finally:
            streamer.join()
            self.aof.stop()
        if self._stream_error is not None:
            raise PipelineError(f"the trade stream failed: {self._stream_error!r}") from self._stream_error
        last_ns = max((f.at_ns for f in self.faults), default=time.time_ns())
        expected = self._expected()
        deadline = last_ns / 1e9 + self.plan.settle_timeout_s
        while time.time() < deadline and not set(expected) <= self._created():
            time.sleep(0.2)
        time.sleep(1.0)  # a copy made twice would come in about as late as the last one
        for name in SERVICES:
            self._wait_running(name)
        result = self._count(expected, last_ns)
        result.restarts = {name: int(self.p.program(name)["restarts"]) - before[name] for name in SERVICES}
        machines = sum(f.name == "machine" for f in self.faults)
        result.kills = {name: sum(f.name == name for f in self.faults) + machines for name in SERVICES}
        return result

    # -- counting -------------------------------------------------------------------------------

    def _expected(self) -> set[str]:
        """The key of every trade's copy for every follower of its leader."""
        by_leader: dict[str, list[_Follower]] = {}
        for f in self.followers:
            by_leader.setdefault(f.leader, []).append(f)
        return {copy_key(t, f.wallet_id) for t in self.trades for f in by_leader[t.wallet.lower()]}

    def _created(self) -> set[str]:
        """Keys of the orders the fake created for these followers."""
        wallets = {f.wallet_id for f in self.followers}
        return self.p.sim.call(lambda: {r.idempotency_key for r in self.p.sim.insiders.posts
                                        if r.outcome == "created" and (r.body or {}).get("walletId") in wallets})

    def _skips(self) -> list[tuple[str, str]]:
        """(key, reason) of every copy the router skipped for these followers."""
        url = self.p.env.get("DATABASE_URL") or (self.p.run_dir / "database_url").read_text().strip()
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT leader_trade_id, follower_wallet_id, reason FROM copy_skips "
                                "WHERE subscription_id = ANY(%s)", [[f.sub_id for f in self.followers]]).fetchall()
        asset_of = {f.wallet_id: self.markets[f.leader].tokens[0] for f in self.followers}
        return [(client_order_id(lt, w, asset_of[w]), str(reason)) for lt, w, reason in rows]

    def _count(self, expected: set[str], last_fault_ns: int) -> ChaosResult:
        wallets = {f.wallet_id for f in self.followers}
        records = self.p.sim.call(lambda: [(r.idempotency_key, r.outcome, r.arrival_ns)
                                           for r in self.p.sim.insiders.posts
                                           if (r.body or {}).get("walletId") in wallets])
        created: Counter[str] = Counter(key for key, outcome, _at in records if outcome == "created")
        posted: Counter[str] = Counter(key for key, _outcome, _at in records)
        last_created = max((at for _key, outcome, at in records if outcome == "created"), default=0)
        skips = self._skips()
        want = expected - {key for key, _reason in skips}
        return ChaosResult(
            trades=len(self.trades), leaders=len(self.markets), followers=len(self.followers), expected=len(want),
            posted=len(want & set(created)), missing=sorted(want - set(created)),
            unexpected=sorted(set(created) - expected), doubled=sorted(k for k, n in created.items() if n > 1),
            reposted=sum(1 for n in posted.values() if n > 1), skips=dict(Counter(r for _k, r in skips)),
            faults=list(self.faults), settle_s=max(0.0, (last_created - last_fault_ns) / 1e9))


def run_chaos(p: Pipeline, plan: ChaosPlan, out: Printer = print) -> ChaosResult:
    """Set up, run and count one chaos run on a running pipeline with embedded storage."""
    run = ChaosRun(p, plan, out)
    run.setup()
    return run.run()


def describe(result: ChaosResult, limit: int = 5) -> str:
    """The summary plus the first keys of each kind of failure."""
    lines = [result.summary()]
    for label, keys in (("missing", result.missing), ("unexpected", result.unexpected), ("doubled", result.doubled)):
        if keys:
            lines.append(f"  {label} ({len(keys)}): {', '.join(keys[:limit])}{' …' if len(keys) > limit else ''}")
    return "\n".join(lines)
