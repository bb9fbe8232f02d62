"""Hand-written components against the libraries they replace, side by side (issue 36, item 3).

    python -m bench compare [--only redis,tickwire,slots,malloc,http] [--rounds 5] [--ops 2000] [--bursts 20]
                            [--quick] [--no-save]

Each side runs in a process of its own (``bench._cmp_worker``), one after the other, ``--rounds``
times, the order of the sides alternating between rounds, against the same server (one embedded
Redis, one ``sim.insiders`` fake on ``sim.httpserve``). Reported per metric: the median over the
rounds and their spread (min–max), and library / hand-written of the medians (> 1: the hand-written
side is cheaper or faster). What each component measures is in its module's docstring:
``bench/_cmp_redis.py`` (RESP client vs redis-py + hiredis), ``bench/_cmp_local.py`` (PriceTick hand
encoder vs ``SerializeToString``, ``Slots`` vs ``asyncio.Semaphore``, ``mallopt`` vs the glibc
environment variables), ``bench/_cmp_http.py`` (the HTTP/1 client vs httpx with an unlimited pool and aiohttp).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench import save_results
from common.config import project_root
from common.embedded import start_redis, stop_pid

COMPONENTS = ("redis", "tickwire", "slots", "malloc", "http")
_MODULE = {"redis": "redis", "tickwire": "local", "slots": "local", "malloc": "local", "http": "http"}


@contextlib.contextmanager
def _servers(component: str, tmp: Path) -> Iterator[dict[str, Any]]:
    """What a component's sides share: Redis, or the Insiders fake."""
    if component == "redis":
        url, pid = start_redis(tmp / "redis", durable=False)
        try:
            yield {"url": url}
        finally:
            stop_pid(pid)
    elif component == "http":
        token = "bench-token"
        proc = subprocess.Popen([sys.executable, "-m", "sim.insiders", "--port", "0", "--token", token],
                                cwd=project_root(), stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            yield {"url": proc.stdout.readline().decode().strip(), "token": token, "server_pid": proc.pid}
        finally:
            proc.terminate()
            proc.wait(10)
    else:
        yield {}


def _run_side(component: str, side: str, params: dict[str, Any]) -> dict[str, float]:
    module = importlib.import_module(f"bench._cmp_{_MODULE[component]}")
    env = {**os.environ, **module.side_env(component, side)} if hasattr(module, "side_env") else None
    if env is not None:
        for name in module.CLEARED_ENV:
            if name not in module.side_env(component, side):
                env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "bench._cmp_worker", _MODULE[component], side,
                           orjson.dumps({**params, "component": component, "side": side}).decode()],
                          cwd=project_root(), env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{component}/{side} failed:\n{done.stderr[-3000:]}")
    metrics: dict[str, float] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return metrics


def compare(component: str, rounds: int, params: dict[str, Any]) -> dict[str, Any]:
    """Interleaved rounds of every side of ``component``; per side and metric the values of each round."""
    module = importlib.import_module(f"bench._cmp_{_MODULE[component]}")
    sides: tuple[str, ...] = module.sides(component) if hasattr(module, "sides") else module.SIDES
    values: dict[str, dict[str, list[float]]] = {s: {} for s in sides}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp, _servers(component, Path(tmp)) as shared:
        params = {**params, **shared}
        if hasattr(module, "prepare"):
            module.prepare({**params, "component": component})
        for r in range(rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for side in order:
                started = time.monotonic()
                got = _run_side(component, side, {**params, "run_id": f"{r}{side}"})
                for metric, value in got.items():
                    values[side].setdefault(metric, []).append(value)
                print(f"  {component} round {r + 1}/{rounds} {side:<18} {time.monotonic() - started:5.1f}s", flush=True)
    return {"sides": list(sides), "rounds": values, "summary": _summary(sides, values)}


def _summary(sides: tuple[str, ...], values: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    base = sides[0]
    out: dict[str, Any] = {}
    for metric in values[base]:
        row: dict[str, Any] = {}
        for side in sides:
            vals = values[side].get(metric, [])
            if vals:
                row[side] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        hand = row[base]["median"]
        for side in sides[1:]:
            if side in row and hand:
                row[side]["vs_hand"] = round(row[side]["median"] / hand, 2)
        out[metric] = row
    return out


def print_summary(component: str, result: dict[str, Any]) -> None:
    """One line per metric: each side's median [min–max] and library / hand-written."""
    sides = result["sides"]
    print(f"--- {component}: median [min-max] over rounds; xN = side / {sides[0]} ---")
    print(f"{'metric':<26}" + "".join(f"{s:>34}" for s in sides))
    for metric, row in result["summary"].items():
        cells = []
        for side in sides:
            c = row.get(side)
            if c is None:
                cells.append(f"{'-':>34}")
                continue
            ratio = f" x{c['vs_hand']:.2f}" if "vs_hand" in c else ""
            cells.append(f"{c['median']:>12.2f} [{c['min']:.1f}-{c['max']:.1f}]{ratio}".rjust(34))
        print(f"{metric:<26}" + "".join(cells), flush=True)


def main(argv: list[str]) -> int:
    """Run the named comparisons (all by default), print and save the results."""
    parser = argparse.ArgumentParser(prog="bench compare")
    parser.add_argument("--only", default=",".join(COMPONENTS), help=f"comma-separated subset of {COMPONENTS}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2000, help="sequential operations per Redis metric per round")
    parser.add_argument("--bursts", type=int, default=20, help="1,000-GET / 1,000-POST bursts per round")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one round of few operations")
    parser.add_argument("--no-save", action="store_true")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.rounds, args.ops, args.bursts = 1, 50, 1
    chosen = [c for c in args.only.split(",") if c]
    unknown = [c for c in chosen if c not in COMPONENTS]
    if unknown:
        print(f"unknown comparison(s) {unknown}; have {COMPONENTS}", file=sys.stderr)
        return 2
    params = {"ops": args.ops, "bursts": args.bursts, "quick": args.quick}
    results: dict[str, Any] = {}
    failed: list[str] = []
    for component in chosen:
        try:
            results[component] = compare(component, args.rounds, params)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"compare {component} failed: {exc}", file=sys.stderr, flush=True)
            failed.append(component)
            continue
        print_summary(component, results[component])
    if results and not args.no_save:
        path = save_results("compare", {"rounds": args.rounds, "params": params, "results": results},
                            baseline=not args.quick and set(chosen) == set(COMPONENTS))
        print(f"saved {path}")
    return 1 if failed else 0
