"""Chaos under load: every copy posted exactly once while every layer, Redis and PostgreSQL crash.

``python -m bench chaos [--short] [--trades N] [--rate R] [--rounds K] [--no-save]`` starts the simulator in
this process and the stack on embedded PostgreSQL and Redis (:class:`tools.pipeline.Pipeline`) and runs
:mod:`tools.chaos`: by default the long form (1,800 leader trades at 15/s, every fault three times: kill -9 of
each service, of Redis restarted from its append-only file, of Redis losing its last second of writes, a
PostgreSQL crash restart and a machine crash). ``--short`` is the form ``make test`` runs
(tests/e2e/test_chaos.py). Prints and saves copies expected / posted / missing / doubled and the time from
the last fault to the last copy posted; exits 1 unless every copy was posted exactly once within 90 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from bench import save_results
from tools.chaos import LONG, LONG_ROUND, SHORT, describe, run_chaos
from tools.pipeline import Pipeline, free_port_env, isolated_env

SETTLE_TARGET_S = 90.0


def main(argv: list[str]) -> int:
    """Run one chaos run; print and save its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench chaos")
    parser.add_argument("--short", action="store_true", help="the form make test runs (300 trades, ~30 s)")
    parser.add_argument("--trades", type=int, default=0, help="leader trades (default: the form's)")
    parser.add_argument("--rate", type=float, default=0.0, help="leader trades per second (default: the form's)")
    parser.add_argument("--rounds", type=int, default=0, help="times the form's faults are run (default: once)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    plan = SHORT if args.short else LONG
    if args.rounds:
        plan = dataclasses.replace(plan, faults=(SHORT.faults if args.short else LONG_ROUND) * args.rounds)
    plan = dataclasses.replace(plan, trades=args.trades or plan.trades, rate_per_s=args.rate or plan.rate_per_s)
    env = {**isolated_env(), **free_port_env(), "TT_STACK_READY_TIMEOUT_S": "120"}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tt-bench-chaos-") as tmp:
        p = Pipeline.start(Path(tmp) / "run", env=env, seed=None, out=lambda _line: None)
        print(f"stack up in {time.monotonic() - started:.1f}s; {plan.trades} trades at {plan.rate_per_s:g}/s, "
              f"{len(plan.faults)} faults", flush=True)
        try:
            result = run_chaos(p, plan, out=lambda line: print(f"{time.monotonic() - started:7.1f}s{line}",
                                                                flush=True))
        finally:
            p.stop(quiet=True)
    print(describe(result), flush=True)
    ok = result.ok and result.settle_s <= SETTLE_TARGET_S
    print(f"{'ok' if ok else 'FAILED'}: {result.posted}/{result.expected} copies posted, "
          f"{len(result.missing)} missing, {len(result.doubled) + len(result.unexpected)} doubled, "
          f"last copy {result.settle_s:.1f}s after the last fault (target ≤ {SETTLE_TARGET_S:g}s)", flush=True)
    if not args.no_save:
        path = save_results("chaos", {"plan": dataclasses.asdict(plan), **result.as_dict(), "ok": ok},
                            baseline=not args.short)
        print(f"saved {path}", flush=True)
    return 0 if ok else 1
