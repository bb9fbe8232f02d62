"""What bench pipeline's (e) reads from the running stack: guard's logged load and lags, its stats line, the
process ids, the transport floor under load, profiles, the stages of hot fires and the ingest-to-POST times."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import CpuMeter, storage_pids
from bench._pipeline_harness import executor_stamps, stage_split
from bench.hops import GUARD_CHAIN as _GUARD_CHAIN
from bench.hops import run_against
from common.streams import TRIGGER_EVENTS
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.guard.v1 import guard_pb2 as gpb


def _guard_load_s(text: str) -> float | None:
    """The last ``armed triggers loaded`` time in guard's log."""
    found = None
    for line in text.splitlines():
        if '"armed triggers loaded"' in line:
            with contextlib.suppress(ValueError, KeyError):
                found = float(json.loads(line)["load_s"])
    return found


def _guard_lags(text: str, since_ms: int) -> list[tuple[float, float]]:
    """(tick lag p50, p99) of guard's stats lines logged after ``since_ms``."""
    out = []
    for line in text.splitlines():
        if '"guard stats"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            d = json.loads(line)
            ts = d.get("ts") or ""
            stamp = datetime.fromisoformat(ts).replace(tzinfo=UTC).timestamp() * 1000 if ts else since_ms
            if stamp >= since_ms - 1000 and "tick_lag_p99_ms" in d:
                out.append((float(d["tick_lag_p50_ms"]), float(d["tick_lag_p99_ms"])))
    return out


def _pids(p: Any) -> dict[str, int]:
    """Pids of the supervised programs, the embedded Redis and PostgreSQL (when found) and this process."""
    out = {"bench+sim": os.getpid()}
    for name in ("ingest", "guard", "executor", "router", "control"):
        with contextlib.suppress(KeyError, ValueError, TypeError):
            out[name] = int(p.program(name).get("pid") or 0)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            exe = os.path.basename(cmd[0].decode(errors="replace"))
            if exe.startswith("redis-server") and str(p.run_dir) in b" ".join(cmd).decode(errors="replace"):
                out["redis"] = int(proc.name)
    return out


def _last_stats(text: str) -> dict[str, Any]:
    """Guard's last stats line (counters, median fire stages, publisher runs held back by fires)."""
    found: dict[str, Any] = {}
    for line in text.splitlines():
        if '"guard stats"' in line:
            with contextlib.suppress(ValueError):
                found = json.loads(line)
    return {k: found[k] for k in ("ticks", "unchanged_ticks", "quiet_ticks", "stale_ticks", "ignored_ticks", "held",
                                  "fire", "window") if k in found}


# per transport: 1,500 messages 5 ms apart and 300 100 ms apart (bench hops takes a fifth at gaps ≥ 20 ms). With
# 100 at 100 ms a hop's p99 was its worst sample, and the limit (e) is judged by swung from 11 to 126 ms between runs.
FLOOR_SAMPLES = 1500


def _floor_under_load(p: Any, samples: int = FLOOR_SAMPLES) -> dict[str, Any] | None:
    """``bench hops --chain guard`` against the stack's Redis and PostgreSQL while the ticks run, one message
    every 5 ms and every 100 ms (the measured crossings' spacing): each hop's p50 / p99 and the drawn totals of
    the chain, per spacing (None when it fails: reported, not fatal)."""
    report = run_against((p.run_dir / "redis_url").read_text().strip(),
                         (p.run_dir / "database_url").read_text().strip(), chain="guard", gaps_ms="5,100",
                         samples=samples)
    if report is None:
        return None
    transports = [t for _label, t in _GUARD_CHAIN]
    return {gap: {"hops": {label: {"p50_ms": hops[t]["p50_ms"], "p99_ms": hops[t]["p99_ms"], "n": hops[t]["n"]}
                           for label, t in zip(report["chain"], transports, strict=True)},
                  "chain": report["floor"][gap], "required_chain": report["floor_required"].get(gap)}
            for gap, hops in report["hops"].items()}


CROSSING_SPACING = "100 ms"  # the measured crossings come one at a time, ~0.1 s apart


def e_target(p99_ms: float, floor: dict[str, Any] | None, spacing: str = CROSSING_SPACING) -> dict[str, Any] | None:
    """Issue 38's target for (e): ingest → SELL POST p99 ≤ 2 × the required hops' drawn p99 at the crossings'
    spacing (None without that floor)."""
    chain = (floor or {}).get(spacing, {}).get("required_chain")
    if not chain or p99_ms != p99_ms:  # no floor, or no SELL measured (NaN)
        return None
    limit = 2 * chain["drawn_p99_ms"]
    return {"spacing": spacing, "floor_p99_ms": chain["drawn_p99_ms"], "limit_p99_ms": round(limit, 3),
            "p99_ms": round(p99_ms, 3), "met": p99_ms <= limit}


def _profile(pids: dict[str, int], seconds: float) -> list[subprocess.Popen[bytes]]:
    """With ``TT_BENCH_PYSPY=<dir>``: py-spy profiles of ingest and guard during the measurement."""
    folder = os.environ.get("TT_BENCH_PYSPY")
    if not folder:
        return []
    Path(folder).mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(["py-spy", "record", "-p", str(pids[name]), "-r", "200", "-f", "raw", "-o",
                              f"{folder}/{name}.txt", "-d", str(int(seconds))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name in ("ingest", "guard", "executor") if pids.get(name)]


def _hot_stages(p: Any, db_url: str) -> dict[str, list[float]]:
    """Hot fires split at guard's decision (``Order.routed_time_ns``, from the recorded SELL), and the part after
    it at the executor's stamps (:func:`stage_split`): admitted, POST sent, the venue's receipt."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT fire_order FROM triggers WHERE id LIKE 'trg_hot_%%' AND fire_order IS NOT NULL"
                            ).fetchall()
    orders = {o.client_order_id: o for o in (epb.Order.FromString(bytes(r[0])) for r in rows)}
    posts = p.sim.call(lambda: {q.client_order_id: q for q in p.sim.insiders.posts if q.client_order_id in orders})
    out: dict[str, list[float]] = {"ingest→guard decided": [], "guard decided→SELL POST": []}
    for coid, q in posts.items():
        o = orders[coid]
        if o.received_time_ns:
            out["ingest→guard decided"].append((o.routed_time_ns - o.received_time_ns) / 1e6)
            out["guard decided→SELL POST"].append((q.arrival_ns - o.routed_time_ns) / 1e6)
    split = stage_split(posts.values(), orders, executor_stamps(db_url, list(orders)))
    return {**out, "decided→executor admitted": split["routed→admitted"],
            "admitted→POST sent": split["admitted→POST sent"], "POST sent→venue": split["POST sent→venue"]}


def _med(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def _ingest_to_post(p: Any, r: Any, hot_tokens: set[str]) -> tuple[list[float], list[float]]:
    """POST arrival − ingest receive (from guard's FIRED events), for walk fires and hot fires."""
    fired: dict[str, tuple[int, str]] = {}
    pos = "-"
    while True:
        rows: Any = r.xrange(TRIGGER_EVENTS, min=pos, count=2000)
        if not rows:
            break
        for _entry_id, fields in rows:
            ev = gpb.TriggerEvent.FromString(fields[b"p"])
            if ev.type == gpb.TRIGGER_EVENT_TYPE_FIRED and ev.trigger.order_id and ev.received_time_ns:
                fired[ev.trigger.order_id] = (ev.received_time_ns, ev.trigger.asset_id)
        pos = "(" + rows[-1][0].decode()
    posts = p.sim.call(lambda: [(q.client_order_id, q.arrival_ns) for q in p.sim.insiders.posts
                                if (q.body or {}).get("side") == "SELL"])
    walk: list[float] = []
    hot: list[float] = []
    seen: set[str] = set()
    for coid, arrival in posts:
        hit = fired.get(coid)
        if hit is None or coid in seen:
            continue
        seen.add(coid)
        (hot if hit[1] in hot_tokens else walk).append((arrival - hit[0]) / 1e6)
    return walk, hot


def fire_cpu_ms(window_us: dict[str, float], alone_us: dict[str, float], ticks: int, fires: int) -> dict[str, float]:
    """CPU (ms) a crossing's fire added, per process: the measurement window's CPU per background tick less the
    ticks' own (measured alone), over the window's ticks, per fire; ``total`` leaves out the load generator."""
    if fires <= 0 or ticks <= 0:
        return {}
    out = {n: round(max(0.0, window_us[n] - alone_us.get(n, 0.0)) * ticks / fires / 1000, 2) for n in window_us}
    out["total"] = round(sum(v for n, v in out.items() if n != "bench+sim"), 2)
    return out


def _quiet_cpu(p: Any, pids: dict[str, int], progress: dict[str, int], seconds: float) -> dict[str, Any] | None:
    """CPU per background tick over ``seconds`` with nothing but the background ticks running (no crossing, no
    floor drawn): what the ticks alone cost, beside the measurement window's figure, which also carries the
    hot crossings' fires."""
    if seconds <= 0:
        return None
    meter = CpuMeter({**{n: [pid] for n, pid in pids.items() if pid}, **storage_pids(p.run_dir)})
    meter.start()
    frames0, t0 = progress["frames"], time.perf_counter()
    time.sleep(seconds)
    used = meter.stop()
    frames1, elapsed = progress["frames"], time.perf_counter() - t0
    ticks = max(2 * (frames1 - frames0), 1)  # each frame moves both tokens of its market
    per_tick = {n: round(s * 1e6 / ticks, 1) for n, s in used.items()}
    return {"seconds": round(elapsed, 1), "ticks_per_s": round(ticks / elapsed), "cpu_us_per_tick": per_tick,
            "cpu_us_per_tick_total": round(sum(v for n, v in per_tick.items() if n != "bench+sim"), 1)}
