"""(e) of ``bench pipeline``: armed triggers in bulk, a CLOB price move → the SELL POST at the Insiders fake.

``N`` ARMED triggers over ``A`` assets (positions + triggers written with COPY, as ``bench/guard.py``
seeds them) plus ``hot`` sim markets, each with one held position and one STOP_LOSS at 0.45 on its
best bid. Guard is restarted (kill -9; the supervisor starts it again) so it loads them all; ingest
then follows every armed asset on the CLOB websocket. For each hot market in turn the simulator
replaces the book around a best bid of 0.44 (one ``book`` frame on the CLOB websocket); latency =
the Insiders fake's arrival time of that asset's SELL POST − the wall time just before the frame was
sent.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench import summarize
from bench.guard import _seed
from sim.scenarios import set_best_bid


def _guard_load_s(text: str) -> float | None:
    """The last ``armed triggers loaded`` time in guard's log."""
    found = None
    for line in text.splitlines():
        if '"armed triggers loaded"' in line:
            with contextlib.suppress(ValueError, KeyError):
                found = float(json.loads(line)["load_s"])
    return found


def scenario_e(b: Any, n_triggers: int, n_assets: int, hot: int) -> dict[str, Any]:
    """Seed, restart guard, fire ``hot`` stop-losses one at a time; sim frame → SELL POST (ms)."""
    p = b.p
    db_url = (p.run_dir / "database_url").read_text().strip()
    markets = [b.market() for _ in range(hot)]
    started = time.monotonic()
    if n_triggers:
        _seed(db_url, n_triggers, n_assets, random.Random(5))
    now = datetime.now(UTC)
    wallets = {}
    with psycopg.connect(db_url) as conn:
        for i, m in enumerate(markets):
            wallet, wid = "0x" + f"{0xbeef0000 + i:040x}", f"w_hot_{i}"
            wallets[m.tokens[0]] = wid
            conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                         " cost_usd) VALUES (%s, %s, %s, %s, 100, 0.5, 50)", (wid, m.tokens[0], m.condition_id, wallet))
            conn.execute("INSERT INTO triggers (id, wallet, follower_wallet_id, asset_id, kind, trigger_price,"
                         " sell_fraction, price_source, state, source, create_time, update_time) VALUES"
                         " (%s, %s, %s, %s, 'STOP_LOSS', 0.45, 1, 'BEST_BID', 'ARMED', 'MANUAL', %s, %s)",
                         (f"trg_hot_{i}", wallet, wid, m.tokens[0], now, now))
        conn.commit()
    seed_s = time.monotonic() - started
    p.wait_restarted("guard", p.kill("guard"), timeout_s=120)
    load_s = None
    deadline = time.monotonic() + 120
    while load_s is None and time.monotonic() < deadline:
        load_s = _guard_load_s(p.log_tail("guard", 400))
        time.sleep(0.1)

    def subscribed() -> bool:
        subs: set[str] = set()
        for client in list(p.sim.sim.clob.clients):
            subs |= set(getattr(client, "subs", ()))
        return all(m.tokens[0] in subs for m in markets)

    deadline = time.monotonic() + 60
    while not p.sim.call(subscribed) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # snapshots in, guard has a first price

    samples: list[float] = []
    missing = 0
    for m in markets:
        token = m.tokens[0]

        def move(m: Any = m) -> int:
            t = time.time_ns()
            set_best_bid(p.sim.sim, m, "0.44")
            return t

        sent = p.sim.call(move)
        got = None
        deadline = time.monotonic() + 10
        while got is None and time.monotonic() < deadline:
            got = p.sim.call(lambda token=token: next(
                (r.arrival_ns for r in p.sim.insiders.posts
                 if (r.body or {}).get("tokenId") == token and (r.body or {}).get("side") == "SELL"), None))
            if got is None:
                time.sleep(0.01)
        if got is None:
            missing += 1
        else:
            samples.append((got - sent) / 1e6)
        time.sleep(0.05)
    return {"triggers": n_triggers + hot, "assets": n_assets + hot, "seed_s": round(seed_s, 1),
            "guard_load_s": load_s, "fired": len(samples), "missing": missing,
            "latency": {"sim tick→SELL POST": summarize(samples)}, **b.load_summary()}
