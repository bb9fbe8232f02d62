"""The harness of ``bench pipeline``: a running pipeline (:class:`tools.pipeline.Pipeline`), followers
subscribed through REST, leader trades driven on the simulator's RTDS feed, and the joins between the
router's log of Orders and the Insiders fake's record of POSTs."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import redis

from bench import CpuMeter, address, storage_pids
from common.routed import parse_routed
from common.streams import ROUTED_TRADES
from sim.polymarket import SimMarket
from tools.pipeline import Pipeline
from tradingtools.execution.v1 import execution_pb2 as epb

FIXED = {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "5"}
FINAL = ("confirmed", "failed", "cancelled")
RSS_TARGET_MB = 250.0  # every service

STAGES = ("ingest→routed", "routed→admitted", "admitted→POST sent", "POST sent→venue")


Stamps = Mapping[str, tuple[int | None, int | None]]  # client order id -> (arrival_ns, post_sent_ns)


def executor_stamps(db_url: str, client_order_ids: list[str]) -> dict[str, tuple[int | None, int | None]]:
    """The executor's stamps of these orders from PostgreSQL: admitted (``orders.arrival_ns``) and POST sent
    (``orders.post_sent_ns``)."""
    with psycopg.connect(db_url) as conn:
        return {coid: (arrival, sent) for coid, arrival, sent in conn.execute(
            "SELECT client_order_id, arrival_ns, post_sent_ns FROM orders WHERE client_order_id = ANY(%s)",
            (client_order_ids,))}


def _stamped(records: Iterable[Any], orders: Mapping[str, epb.Order],
             stamps: Stamps) -> Iterator[tuple[Any, epb.Order, int, int]]:
    """The POSTs whose Order and stamps are all known: (POST, Order, admitted ns, POST sent ns)."""
    for r in records:
        o = orders.get(r.client_order_id)
        admitted, sent = stamps.get(r.client_order_id, (None, None))
        if o is not None and o.received_time_ns and admitted and sent:
            yield r, o, admitted, sent


def stage_split(records: Iterable[Any], orders: Mapping[str, epb.Order], stamps: Stamps) -> dict[str, list[float]]:
    """Where each POST's time went (ms): ingest → routed (the router decided), routed → admitted (the executor
    prepared the order: ``orders.arrival_ns``), admitted → POST sent (its intent committed and its runner
    started: ``orders.post_sent_ns``), POST sent → the venue's receipt (``arrival_ns`` of the fake's record).
    ``stamps``: client order id → (arrival_ns, post_sent_ns). A POST whose Order or stamps are missing is left out
    of every stage, so the stages of one POST add up to its ingest → POST."""
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for r, o, admitted, sent in _stamped(records, orders, stamps):
        for name, start, end in zip(STAGES, (o.received_time_ns, o.routed_time_ns, admitted, sent),
                                    (o.routed_time_ns, admitted, sent, r.arrival_ns), strict=True):
            out[name].append((end - start) / 1e6)
    return out


MILESTONES = ("routed", "first admitted", "last admitted", "first POST sent", "last POST sent", "last at venue")


def fanout_timeline(records: Iterable[Any], orders: Mapping[str, epb.Order], stamps: Stamps) -> dict[str, float]:
    """One fan-out's milestones (ms after ingest received the leader's trade): the router decided, the executor
    prepared its first and last order, sent its first and last POST, and the venue received the last one. The
    POSTs of one leader trade; those missing a stamp are left out (see :func:`stage_split`)."""
    marks: dict[str, list[int]] = {name: [] for name in ("received", "routed", "admitted", "sent", "venue")}
    for r, o, admitted, sent in _stamped(records, orders, stamps):
        for name, value in zip(marks, (o.received_time_ns, o.routed_time_ns, admitted, sent, r.arrival_ns),
                               strict=True):
            marks[name].append(value)
    if not marks["received"]:
        return {}
    t0 = min(marks["received"])
    points = (max(marks["routed"]), min(marks["admitted"]), max(marks["admitted"]), min(marks["sent"]),
              max(marks["sent"]), max(marks["venue"]))
    return {name: (at - t0) / 1e6 for name, at in zip(MILESTONES, points, strict=True)}


@contextmanager
def no_full_collections() -> Iterator[None]:
    """No full garbage collection in this process (the load generator, with the simulated venue and feeds on its
    thread) while a scenario runs; one before it and one after. A full pass over the bench's records stopped the
    venue and the feeds 85-180 ms at a time in (c), and the trades held back meanwhile reached the stack as one
    burst: latency the stack did not cause (in production the venue and the feeds are other machines)."""
    gc.collect()
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)  # young generations are still collected
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.collect()


class Bench:
    """A running pipeline plus the joins between its logs."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.redis = redis.Redis.from_url((p.run_dir / "redis_url").read_text().strip())
        self.stream_pos = "0-0"
        self.orders: dict[str, epb.Order] = {}
        self.sent_ns: dict[str, int] = {}
        self.load: list[tuple[float, float, float]] = []
        self.unheard = 0  # driven trades no RTDS subscriber heard (see :meth:`drive`)

    # -- setup ----------------------------------------------------------------------------------

    def market(self) -> SimMarket:
        """A market with very deep books so depth checks never bind."""
        return self.p.sim.call(self.p.sim.sim.add_market, levels=5, level_size="2000000")

    def subscribe(self, leaders: Iterable[str], per_leader: int, mode: str = "EXECUTION_MODE_LIVE",
                  exits: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """``per_leader`` fresh followers per leader through REST (Envoy), LIVE unless ``mode`` says otherwise, with
        ``exits`` (take-profit / stop-loss set on each fill) when given; leader → wallet ids."""
        out: dict[str, list[str]] = {}
        with self.p.rest(timeout_s=30) as rest:
            for leader in leaders:
                for _ in range(per_leader):
                    wallet = f"w_{secrets.token_hex(6)}"
                    body = {"followerUserId": f"u_{wallet}", "followerWalletId": wallet, "followerProxy": address(),
                            "leaderProxy": leader, "mode": mode, "sizing": FIXED,
                            "filters": {"copySells": True}, **({"exits": dict(exits)} if exits else {})}
                    reply = rest.post("/subscriptions", json=body)
                    if reply.status_code != 200:
                        raise RuntimeError(f"subscription: {reply.status_code} {reply.text}")
                    out.setdefault(leader, []).append(wallet)
        return out

    def wait_followed(self, leaders: Iterable[str], timeout_s: float = 60.0) -> None:
        """Ingest follows every leader once its poller asked the data-api about it."""
        want = set(leaders)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            asked = self.p.sim.call(lambda: {q.get("user") for _p, q in self.p.sim.sim.data.requests})
            if want <= asked:
                time.sleep(0.5)  # the RTDS subscription follows the backfill
                return
            time.sleep(0.1)
        raise RuntimeError(f"ingest does not follow {len(want - asked)} leaders")

    # -- driving --------------------------------------------------------------------------------

    def drive(self, rate_per_s: float, duration_s: float, plan: list[tuple[str, SimMarket]],
              feeds: tuple[str, ...] = ("rtds",)) -> int:
        """Leader trades at ``rate_per_s`` for ``duration_s`` (round robin over ``plan``) on RTDS (and on the
        data-api when ``feeds`` says so). A trade published while ingest's RTDS socket is not subscribed (it is
        reconnecting after 15 s of silence) is counted in :attr:`unheard`: only the data-api can bring it."""
        sim, sent = self.p.sim.sim, self.sent_ns

        async def run() -> int:
            loop = asyncio.get_running_loop()
            start, interval, n = loop.time(), 1.0 / rate_per_s, 0
            while n * interval < duration_s:
                delay = start + n * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                leader, market = plan[n % len(plan)]
                tx = "0x" + secrets.token_hex(32)
                sent[tx] = time.time_ns()
                if sim.rtds.stalled or not any(sim.rtds.subscribed(c, "activity", "trades")
                                               for c in list(sim.rtds.clients)):
                    self.unheard += 1
                sim.trade(leader, market=market, token=market.tokens[0], price="0.51", size="100", tx=tx,
                          feeds=feeds)
                n += 1
                if n % max(1, int(rate_per_s)) == 0:
                    self.load.append(os.getloadavg())
            return n

        return self.p.sim.run(run(), timeout_s=duration_s + 60)

    # -- collecting -----------------------------------------------------------------------------

    def posts(self, wallets: set[str], since: int = 0) -> list[Any]:
        """Created POSTs of these wallets (the fake's record), from its ``since``-th POST on."""
        return self.p.sim.call(lambda: [r for r in self.p.sim.insiders.posts[since:]
                                        if r.outcome == "created" and (r.body or {}).get("walletId") in wallets])

    def post_count(self) -> int:
        """POSTs the fake recorded so far (a later POST is recorded after this index)."""
        return self.p.sim.call(lambda: len(self.p.sim.insiders.posts))

    def wait_posts(self, wallets: set[str], count: int, timeout_s: float, since: int = 0) -> list[Any]:
        """Wait until ``count`` orders of these wallets were created from the fake's ``since``-th POST on
        (or time out; returns what came). ``since`` keeps the fake's loop from rescanning old POSTs while
        it is timing new ones."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.post_count() - since >= count:  # cheap check first: the scan runs on the fake's loop
                got = self.posts(wallets, since)
                if len(got) >= count:
                    return got
            time.sleep(0.05)
        return self.posts(wallets, since)

    def read_orders(self) -> None:
        """New Orders from the router's durable log, by client order id."""
        while True:
            rows: list[tuple[bytes, dict[bytes, bytes]]] = self.redis.xrange(  # type: ignore[assignment]
                ROUTED_TRADES, min=f"({self.stream_pos}", count=500)
            if not rows:
                return
            for entry_id, fields in rows:
                routed = parse_routed(fields[b"p"])
                for order in routed.orders:
                    self.orders[order.client_order_id] = order
                self.stream_pos = entry_id.decode()

    def hops(self, records: list[Any]) -> dict[str, list[float]]:
        """Per-POST latencies (ms) of each hop; POSTs whose Order is not in the log are skipped."""
        self.read_orders()
        out: dict[str, list[float]] = {"ingest→POST": [], "ingest→routed": [], "routed→POST": [], "sim→POST": []}
        for r in records:
            o = self.orders.get(r.client_order_id)
            if o is None or not o.received_time_ns:
                continue
            out["ingest→POST"].append((r.arrival_ns - o.received_time_ns) / 1e6)
            out["ingest→routed"].append((o.routed_time_ns - o.received_time_ns) / 1e6)
            out["routed→POST"].append((r.arrival_ns - o.routed_time_ns) / 1e6)
            if (sent := self.sent_ns.get(o.leader_tx_hash)) is not None:
                out["sim→POST"].append((r.arrival_ns - sent) / 1e6)
        return out

    def stages(self, records: list[Any]) -> dict[str, list[float]]:
        """:func:`stage_split` of these POSTs, with the executor's stamps read from PostgreSQL."""
        return stage_split(records, self.orders, self._stamps(records))

    def timeline(self, records: list[Any]) -> dict[str, float]:
        """:func:`fanout_timeline` of one leader trade's POSTs."""
        return fanout_timeline(records, self.orders, self._stamps(records))

    def _stamps(self, records: list[Any], timeout_s: float = 5.0) -> dict[str, tuple[int | None, int | None]]:
        """The executor's stamps of these POSTs; waits (up to ``timeout_s``) until each has both: the POST-sent
        stamp is written behind the POST, with the order's next transition."""
        self.read_orders()
        url, ids = (self.p.run_dir / "database_url").read_text().strip(), [r.client_order_id for r in records]
        deadline = time.monotonic() + timeout_s
        stamps = executor_stamps(url, ids)
        while (missing := [i for i in ids if not all(stamps.get(i, (None, None)))]) and time.monotonic() < deadline:
            time.sleep(0.05)
            stamps.update(executor_stamps(url, missing))  # only the POSTs still without both stamps
        return stamps

    def cpu_meter(self) -> CpuMeter:
        """CPU of every supervised program, PostgreSQL, Redis and this process (simulator + bench)."""
        groups: dict[str, list[int]] = {}
        for name in ("control", "ingest", "router", "executor", "guard", "envoy"):
            try:
                groups[name] = [int(self.p.program(name).get("pid") or 0)]
            except KeyError:
                continue
        groups.update(storage_pids(self.p.run_dir))
        groups["sim+bench"] = [os.getpid()]
        return CpuMeter(groups)

    def wait_idle(self, client_order_ids: Iterable[str], timeout_s: float = 30.0, *, quiet: bool = False) -> None:
        """Until each of these orders was confirmed at the fake (status polled to a final state), so the next
        fan-out run starts on a stack that is not still settling the previous one; with ``quiet``, also until the
        services' CPU use has died down (:meth:`wait_quiet`). Each poll looks up only the orders not final yet:
        a scan of every order the fake holds (200,000 by the 20th run of 10,000) took the fake's loop, which
        serves the POSTs, for longer at every run."""
        fake = self.p.sim.insiders
        pending = set(client_order_ids)

        def settle() -> None:
            for coid in list(pending):
                order = fake.orders.get(fake.by_client_id.get(coid, ""))
                if order is not None and order.status in FINAL:
                    pending.discard(coid)

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.p.sim.call(settle)
            if not pending:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # the executor's journal and guard finish their last writes
        if quiet:
            self.wait_quiet()

    def wait_quiet(self, window_s: float = 0.1, max_busy: float = 0.1, timeout_s: float = 15.0) -> None:
        """Until the services and storage together use under ``max_busy`` of one core over ``window_s``
        (the previous run's confirmations, journal writes and guard bookkeeping are done)."""
        meter = self.cpu_meter()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            meter.start()
            time.sleep(window_s)
            used = sum(v for k, v in meter.stop().items() if k != "sim+bench")
            if used < window_s * max_busy:
                return

    def load_summary(self) -> dict[str, Any]:
        """Load averages sampled during the last drive (and now)."""
        samples, self.load = self.load, []
        now = os.getloadavg()
        peak = max((s[0] for s in samples), default=now[0])
        return {"load1_max": round(peak, 2), "load_at_end": [round(x, 2) for x in now]}
