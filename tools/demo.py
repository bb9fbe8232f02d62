"""``make demo``: the control REST API, the copy flow and the guard, on the whole stack and the simulator.

1. The control REST walk-through (:mod:`tools.demo_rest`): every route through Envoy with the token.
2. The copy flow (:mod:`tools.demo_copy`): three leaders, five followers, a replayed session of about
   a hundred leader fills on the simulator, one line per copy, a summary table, checks.
3. The guard (:mod:`tools.demo_guard`): a take-profit, a trailing stop and a stop-loss firing on a
   simulated price path, and a loss-stop pausing a subscription.
4. Positions (:mod:`tools.demo_positions`): markets resolve (winners redeemed and confirmed, losers closed at
   $0, a freed cap lets the next copy through), and a sell made in the trading terminal is reconciled before
   the leader's exit is mirrored.
5. Operate it (:mod:`tools.demo_operate`): where each service's Prometheus metrics are, and the alert the
   5xx storm of part 2 delivered to a local webhook receiver (the circuit breaker opening), signature checked.

The simulator runs in this process (:mod:`tools.pipeline`) on its fixed ports (``TT_SIM_*_PORT``)
and the stack runs under its supervisor as ``make up`` would start it. Any unexpected answer or
outcome makes the demo exit non-zero. The stack is stopped at the end unless ``KEEP=1``: then the
simulator is handed over to the supervisor (``python -m sim --insiders`` on the same ports) and the
stack stays up for curl / grpcurl until ``make down``.

When ``TT_STACK_SERVICES`` leaves out pipeline services, only part 1 runs (and says so).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc
import httpx

from common.config import env_port, grpc_port, load_tokens, run_dir
from tools import stack, stack_sim
from tools.demo_rest import BODY_WIDTH, DemoFailure, Walker, compact, prune, walk
from tools.simthread import SimPorts

__all__ = ["BODY_WIDTH", "compact", "main", "prune"]

Printer = Callable[[str], None]
PIPELINE = ("control", "ingest", "router", "executor", "guard")


def usage_hint(env: Mapping[str, str], out: Printer) -> None:
    """How to call the running stack by hand."""
    port = env_port(env, "TT_GATEWAY_PORT", 9110)
    control = grpc_port(env, "control")
    token_file = Path(run_dir(env)).resolve() / "control_api_token"
    token = ("$CONTROL_API_TOKEN" if env.get("CONTROL_API_TOKEN") else f"$(cat {token_file})")
    internal = ("$TT_INTERNAL_TOKEN" if env.get("TT_INTERNAL_TOKEN")
                else f"$(cat {Path(run_dir(env)).resolve() / 'internal_token'})")
    out("\nThe stack is still up (make down stops it). Try:")
    out(f"  TOKEN={token}")
    out(f"  INTERNAL={internal}   # the services' own token: their gRPC ports refuse calls without it")
    out(f"  curl -s http://127.0.0.1:{port}/ready")
    out(f"  curl -s -H \"Authorization: Bearer $TOKEN\" "
        f"'http://127.0.0.1:{port}/subscriptions?followerProxy=0x6af75d4e4aaf700450efbac3708cce1665810ff1'")
    out(f"  grpcurl -plaintext 127.0.0.1:{control} list")
    out(f"  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" "
        f"-d '{{\"followerProxy\":\"0x6af75d4e4aaf700450efbac3708cce1665810ff1\"}}' "
        f"127.0.0.1:{control} tradingtools.control.v1.SubscriptionService/ListSubscriptions")
    out(f"  grpcurl -plaintext -H \"authorization: Bearer $INTERNAL\" -d '{{\"afterCursor\":\"0\"}}' "
        f"127.0.0.1:{grpc_port(env, 'executor')} "
        "tradingtools.execution.v1.ExecutorService/StreamOrderEvents")
    out("  make logs   # follow every process's log")


def section(out: Printer, title: str) -> None:
    """A section heading."""
    out(f"\n── {title} " + "─" * max(0, 74 - len(title)))


def main(env: Mapping[str, str] | None = None, out: Printer | None = None) -> int:
    """Run the demo; 0 when every call and every outcome is as expected."""
    environ = stack.resolve_env(env)
    say: Printer = out or (lambda text: print(text, flush=True))
    keep = environ.get("KEEP", "").strip() not in ("", "0")
    if stack.supervisor_alive(stack.read_state(Path(environ["TT_RUN_DIR"]))):
        say("A stack is already up in this run folder. The demo scripts its own simulator, so it brings the "
            "stack up itself: run `make down` first (KEEP=1 make demo leaves the demo's stack up).")
        return 1
    missing = [s for s in PIPELINE if s not in stack.selected_services(environ)]
    if missing:
        say(f"TT_STACK_SERVICES leaves out {', '.join(missing)}: only the control REST walk-through runs.")
        return _rest_only(environ, say, keep)
    return _full(environ, say, keep)


def _rest_only(environ: dict[str, str], say: Printer, keep: bool) -> int:
    say("Bringing the stack up…")
    code, ready = 1, False
    try:
        ready = stack.up(environ, out=say) == 0
        if ready:
            code = _walk(environ, say)
    finally:
        if keep and ready:
            usage_hint(environ, say)
        else:
            say("\nStopping the stack (KEEP=1 leaves it up)…")
            stack.down(environ, out=say)
    return code


def _walk(environ: Mapping[str, str], say: Printer) -> int:
    port = env_port(environ, "TT_GATEWAY_PORT", 9110)
    token = load_tokens(environ)[0].value
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
        walker = Walker(client, token, say)
        try:
            walk(walker)
        except (DemoFailure, httpx.HTTPError) as exc:
            say(f"\nDemo FAILED: {exc}")
            return 1
    say(f"\nDemo passed: {walker.calls} calls answered as the contract says.")
    return 0


def _full(environ: dict[str, str], say: Printer, keep: bool) -> int:
    from tools import demo_copy, demo_guard, demo_operate, demo_positions, demo_report
    from tools.demo_checks import check_copy_flow
    from tools.pipeline import Pipeline, PipelineError

    started = time.monotonic()
    ports = SimPorts(*(env_port(environ, name, default) for name, default in stack_sim.SIM_PORTS.items()))
    say("Bringing the stack up with the simulator (Polymarket feeds and the Insiders API on loopback)…")
    try:
        # markets with new ids every run: a run folder's data outlives the stack, and with them what an earlier
        # run did to its markets (resolved, closed)
        pipeline = Pipeline.start(Path(environ["TT_RUN_DIR"]), env=environ, sim_ports=ports, out=say, seed=None)
    except (PipelineError, OSError) as exc:
        say(f"\nDemo FAILED: {exc}")
        return 1
    code = 1
    world = None
    try:
        with httpx.Client(base_url=pipeline.gateway_url, timeout=10.0) as client:  # the walker adds the token
            walker = Walker(client, pipeline.token, say)
            section(say, "1. Control REST API (every route through Envoy)")
            walk(walker)
            section(say, "2. Copy flow: three leaders, five followers")
            world = demo_copy.setup(pipeline, walker)
            section(say, "   Replayed session: leader trade → follower order → fill (copy latency)")
            result = demo_copy.run_session(world, say)
            section(say, "   Summary")
            stats = demo_report.summary(world, result, say)
            check_copy_flow(world, result, stats, walker)
            section(say, "3. Guard: exits on a simulated price path, a loss-stop")
            demo_guard.run(world, result, walker)
            section(say, "4. Positions: a market resolves; the venue's count is the truth")
            demo_positions.run(world, walker)
            if not keep:
                section(say, "   Cleanup: the demo's subscriptions stopped (KEEP=1 leaves them)")
                for sub_id in world.subs.values():
                    walker.call("DELETE", f"/subscriptions/{sub_id}", 200, body_line=False)
            section(say, "5. Operate it: metrics and alerts")
            demo_operate.show(pipeline, say)
        say(f"\nDemo passed in {time.monotonic() - started:.0f}s: {walker.calls} REST calls answered as the "
            "contract says and every copy, skip and exit checked.")
        code = 0
    except (DemoFailure, AssertionError, httpx.HTTPError, grpc.RpcError) as exc:
        say(f"\nDemo FAILED: {exc}")
    finally:
        if world is not None:
            world.stop()
        if keep:  # up for inspection, also after a failure
            pipeline.stop(keep_stack=True)
            stack.attach_simulator(pipeline.env, out=say)
            usage_hint(pipeline.env, say)
        else:
            say("\nStopping the stack (KEEP=1 leaves it up)…")
            pipeline.stop()
    return code


if __name__ == "__main__":
    sys.exit(main(os.environ))
