"""Control REST API through Envoy, on the real stack: create+get of a subscription, list of 500.

Open-loop load: request *i* is due at ``t0 + i / rate`` whatever happened to the others, and its
latency counts from when it was due (a slow answer delays no later request, so queueing shows up
in the percentiles instead of hiding). By default a private stack (embedded PostgreSQL and Redis,
the control service and Envoy, on free ports in a temporary run folder) is started and stopped;
``--use-running`` measures the stack that ``make up`` started instead.

    python -m bench control_api [--rate 100] [--samples 5000] [--list-rate 5] [--list-samples 300]

First an unloaded baseline (one request at a time, through Envoy and direct over gRPC) separates
the edge's cost from the control service's; then the open-loop runs measure latency under load:
create+get, then the list asking for gzip (as most HTTP clients do by default), then the same list
without ``Accept-Encoding``.
The client is the executor's ``Http1Client`` (keep-alive HTTP/1.1, about half of aiohttp's CPU per
request here), so the load generator takes as little as it can of the two cores it shares with the
stack.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import address, keep_freed_memory, print_table, save_results, summarize
from bench._load import CpuSnapshot, Errors, cpu_meter, cpu_per_request_us, paced
from common.config import env_port, grpc_port, load_tokens
from common.embedded import free_port
from common.http1 import Http1Client, HttpError
from tools import stack
from tools.supervisor import GATEWAY, read_state

TARGET_P99_MS = 10.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send requests."""

    base_url: str
    token: str


def subscription_body(follower: str, leader: str) -> bytes:
    """A full create body, as the Insiders backend sends it."""
    return orjson.dumps({
        "followerUserId": "u_bench", "followerWalletId": f"w_{follower[2:10]}", "followerProxy": follower,
        "leaderProxy": leader, "label": "bench", "mode": "EXECUTION_MODE_PAPER",
        "sizing": {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.05", "minOrderUsd": "1", "maxOrderUsd": "250"},
        "filters": {"minPrice": "0.05", "maxPrice": "0.95", "minLeaderTradeUsd": "50",
                    "marketDenylist": ["btc-updown-5m"], "copySells": True, "maxSlippageBps": 200},
        "risk": {"maxMarketExposureUsd": "500", "maxTotalExposureUsd": "2000", "maxOpenPositions": 20,
                 "dailyLossLimitUsd": "300"},
        "exits": {"takeProfitPct": "40", "stopLossPct": "25",
                  "ladder": [{"gainPct": "20", "sellFraction": "0.5"}, {"gainPct": "50", "sellFraction": "1"}]},
        "perf": {"lossStopUsd": "400", "profitScaleAtUsd": "1000", "profitScaleMultiplier": "1.5"},
    })


def _headers(target: Target) -> bytes:
    return f"Authorization: Bearer {target.token}\r\nContent-Type: application/json\r\n".encode()


def _pool(target: Target, limit: int = 256) -> Http1Client:
    return Http1Client(target.base_url, max_connections=limit)


async def _request(http: Http1Client, method: str, path: str, headers: bytes, body: bytes | None = None) -> bytes:
    """The response body, inflated when it came gzipped (the client's work is part of the latency)."""
    reply = await http.request(method, path, body=body or b"", raw_headers=headers, timeout_s=60.0)
    if reply.status != 200:
        raise Errors(f"{method} {path}: {reply.status} {reply.body[:200]!r}")
    if reply.headers.get("content-encoding") == "gzip":
        return zlib.decompress(reply.body, 16 + zlib.MAX_WBITS)
    return reply.body


async def create_get(target: Target, rate: float, warmup: int, samples: int,
                     cpu: CpuSnapshot | None = None) -> dict[str, Any]:
    """POST /subscriptions then GET /subscriptions/{id}, ``rate`` pairs per second."""
    headers = _headers(target)
    session = _pool(target)
    try:

        async def one(due: float) -> tuple[float, ...] | str:
            try:
                sent = time.monotonic()
                created = await _request(session, "POST", "/subscriptions", headers,
                                         subscription_body(address(), address()))
                got_created = time.monotonic()
                sub_id = orjson.loads(created)["id"]
                await _request(session, "GET", f"/subscriptions/{sub_id}", headers)
            except (Errors, HttpError, OSError, TimeoutError) as exc:
                return f"{type(exc).__name__}: {exc}"
            done = time.monotonic()
            return got_created - due, done - got_created, done - due, sent - due, done

        await paced(rate, warmup, one)
        started = time.monotonic()
        before = cpu() if cpu else {}
        results = await paced(rate, samples, one)
        used = cpu_per_request_us(before, cpu(), 2 * samples) if cpu else {}
    finally:
        await session.close()
    ok = [r for r in results if not isinstance(r, str)]
    ms = [[r[i] * 1000 for r in ok] for i in range(4)]
    # The workload's requests (each create and each get, 2 × samples) are what the target is about;
    # the create→get sequence (one after the other) is kept as an extra, stricter figure.
    return {"create": summarize(ms[0]), "get": summarize(ms[1]), "create+get requests": summarize(ms[0] + ms[1]),
            "create→get sequence": summarize(ms[2]),
            "start_lag_max_ms": round(max(ms[3], default=0.0), 3), "cpu_us_per_request": used,
            **_outcome(results, ok, started)}


# The list runs at 5/s: spinning the last 3 ms before each due time costs the client ~1.5 % of a core
# (create+get at 200/s would spin a third of one, taken from the stack under test, so it sleeps plainly).
_LIST_SPIN_S = 0.003


async def follower_with_500(target: Target) -> str:
    """A new follower with 500 subscriptions (its list is what ``list_500`` reads)."""
    headers = _headers(target)
    follower = address()
    session = _pool(target, limit=64)
    try:
        gate = asyncio.Semaphore(16)

        async def create(_: int) -> None:
            async with gate:
                await _request(session, "POST", "/subscriptions", headers, subscription_body(follower, address()))

        await asyncio.gather(*(create(i) for i in range(500)))
    finally:
        await session.close()
    return follower


async def list_500(target: Target, follower: str, rate: float, warmup: int, samples: int,
                   cpu: CpuSnapshot | None = None, *, gzip: bool = True) -> dict[str, Any]:
    """GET /subscriptions?followerProxy=…&pageSize=500 of ``follower_with_500``'s follower, asking for
    gzip as httpx, requests, aiohttp and browsers do by default (``gzip=False``: without it). Each
    latency includes inflating the body."""
    headers = _headers(target) + (b"Accept-Encoding: gzip, deflate\r\n" if gzip else b"")
    session = _pool(target, limit=64)
    url = f"/subscriptions?followerProxy={follower}&pageSize=500"
    try:
        first = orjson.loads(await _request(session, "GET", url, headers))
        if len(first.get("subscriptions", [])) != 500:
            raise Errors(f"list returned {len(first.get('subscriptions', []))} subscriptions, expected 500")
        body_bytes = len(orjson.dumps(first))
        wire = await session.request("GET", url, raw_headers=headers, timeout_s=60.0)
        wire_bytes = len(wire.body)

        async def one(due: float) -> tuple[float, ...] | str:
            try:
                sent = time.monotonic()
                await _request(session, "GET", url, headers)
            except (Errors, HttpError, OSError, TimeoutError) as exc:
                return f"{type(exc).__name__}: {exc}"
            done = time.monotonic()
            return done - due, sent - due, done

        spin = _LIST_SPIN_S if rate <= 20 else 0.0
        await paced(rate, warmup, one, spin_s=spin)
        started = time.monotonic()
        before = cpu() if cpu else {}
        results = await paced(rate, samples, one, spin_s=spin)
        used = cpu_per_request_us(before, cpu(), samples) if cpu else {}
    finally:
        await session.close()
    ok = [r for r in results if not isinstance(r, str)]
    return {"list_500": summarize([r[0] * 1000 for r in ok]), "response_bytes": body_bytes,
            "wire_bytes": wire_bytes, "content_coding": wire.headers.get("content-encoding", "identity"),
            "cpu_us_per_request": used,
            "start_lag_max_ms": round(max((r[1] for r in ok), default=0.0) * 1000, 3),
            **_outcome(results, ok, started)}


def _outcome(results: list[Any], ok: list[tuple[float, ...]], started: float) -> dict[str, Any]:
    """Failures (first few reasons) and the throughput actually achieved."""
    failed = [r for r in results if isinstance(r, str)]
    elapsed = (max(r[-1] for r in ok) - started) if ok else 0.0
    return {"failed": len(failed), "failure_examples": sorted(set(failed))[:3],
            "achieved_per_s": round(len(ok) / elapsed, 1) if elapsed > 0 else 0.0}


async def unloaded(target: Target, grpc_port: int, pairs: int, lists: int) -> dict[str, Any]:
    """Closed loop (one request at a time): the service time through Envoy and direct over gRPC.

    Tells the edge's share of the latency from the control service's own.
    """
    import grpc
    from google.protobuf import json_format

    from tradingtools.control.v1 import control_pb2, control_pb2_grpc

    headers = _headers(target)
    session = _pool(target, limit=4)
    metadata = (("authorization", f"Bearer {target.token}"),)
    out: dict[str, list[float]] = {k: [] for k in ("rest create", "rest get", "grpc create", "grpc get",
                                                   "rest list 500", "grpc list 500",
                                                   "rest list 500, a row changed each time")}
    follower = await follower_with_500(target)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        stub = control_pb2_grpc.SubscriptionServiceStub(ch)
        for _ in range(pairs):
            t0 = time.monotonic()
            sub_id = orjson.loads(await _request(session, "POST", "/subscriptions", headers,
                                                 subscription_body(address(), address())))["id"]
            t1 = time.monotonic()
            await _request(session, "GET", f"/subscriptions/{sub_id}", headers)
            t2 = time.monotonic()
            request = control_pb2.CreateSubscriptionRequest()
            json_format.Parse(subscription_body(address(), address()), request.subscription)
            t3 = time.monotonic()
            created = await stub.CreateSubscription(request, metadata=metadata, timeout=10)
            t4 = time.monotonic()
            await stub.GetSubscription(control_pb2.GetSubscriptionRequest(id=created.id), metadata=metadata,
                                       timeout=10)
            t5 = time.monotonic()
            for key, ms in (("rest create", t1 - t0), ("rest get", t2 - t1), ("grpc create", t4 - t3),
                            ("grpc get", t5 - t4)):
                out[key].append(ms * 1000)
        url = f"/subscriptions?followerProxy={follower}&pageSize=500"
        listing = control_pb2.ListSubscriptionsRequest(follower_proxy=follower, page_size=500)
        for _ in range(lists):
            t0 = time.monotonic()
            await _request(session, "GET", url, headers)
            t1 = time.monotonic()
            await stub.ListSubscriptions(listing, metadata=metadata, timeout=10)
            t2 = time.monotonic()
            out["rest list 500"].append((t1 - t0) * 1000)
            out["grpc list 500"].append((t2 - t1) * 1000)
        # An active follower: one of the page's subscriptions changes before every list.
        some_id = orjson.loads(await _request(session, "GET", url, headers))["subscriptions"][0]["id"]
        for i in range(lists):
            await _request(session, "PATCH", f"/subscriptions/{some_id}", headers, orjson.dumps({"label": f"b{i}"}))
            t0 = time.monotonic()
            await _request(session, "GET", url, headers)
            out["rest list 500, a row changed each time"].append((time.monotonic() - t0) * 1000)
    await session.close()
    return {k: summarize(v[max(1, len(v) // 10):]) for k, v in out.items()}


def _stack_pids(env: dict[str, str]) -> dict[str, int]:
    """Pids of the stack's control and Envoy processes (from the supervisor's state), if known."""
    state = read_state(Path(env["TT_RUN_DIR"])) if env.get("TT_RUN_DIR") else None
    names = {"control": "control", GATEWAY: "envoy"}
    return {names[p["name"]]: int(p["pid"]) for p in (state or {}).get("programs", [])
            if p.get("name") in names and p.get("pid")}


def _private_env(run: Path) -> dict[str, str]:
    env = stack.resolve_env()
    for name in ("DATABASE_URL", "REDIS_URL", "CONTROL_API_TOKEN", "TT_INTERNAL_TOKEN"):
        env.pop(name, None)
    env.update({
        "TT_RUN_DIR": str(run), "TT_STACK_SERVICES": "control", "TT_STACK_SIMULATOR": "0",
        "TT_GATEWAY_PORT": str(free_port()),
        "TT_CONTROL_GRPC_PORT": str(free_port()),
    })
    return env


async def measure(target: Target, grpc_port: int, args: argparse.Namespace,
                  cpu: CpuSnapshot | None = None) -> dict[str, Any]:
    """Unloaded baseline, then both open-loop measurements, one after the other."""
    baseline: dict[str, Any] = {}
    if args.baseline > 0:
        lists = max(10, args.baseline // 5)
        print(f"unloaded baseline: {args.baseline} create+get and {lists} list calls, one at a time, "
              "through Envoy and direct gRPC", flush=True)
        baseline = await unloaded(target, grpc_port, args.baseline, lists)
    print(f"create+get: {args.rate:g} pairs/s ({2 * args.rate:g} requests/s), {args.warmup} warm-up, "
          f"{args.samples} samples (~{(args.warmup + args.samples) / args.rate:.0f}s)", flush=True)
    pair = await create_get(target, args.rate, args.warmup, args.samples, cpu)
    print(f"list of 500: {args.list_rate:g}/s, {args.list_warmup} warm-up, {args.list_samples} samples "
          f"(~{(args.list_warmup + args.list_samples) / args.list_rate:.0f}s)", flush=True)
    follower = await follower_with_500(target)
    listed = await list_500(target, follower, args.list_rate, args.list_warmup, args.list_samples, cpu)
    print("list of 500 without Accept-Encoding: same pace and counts", flush=True)
    identity = await list_500(target, follower, args.list_rate, args.list_warmup, args.list_samples, cpu, gzip=False)
    return {"baseline": baseline, "pair": pair, "list": listed, "list_identity": identity}


def main(argv: list[str]) -> int:
    """Run the benchmark, print the percentiles and save them under ``bench/results/``."""
    parser = argparse.ArgumentParser(prog="python -m bench control_api")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="create+get pairs per second (100 = the issue's 200 requests/s)")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--list-rate", type=float, default=5.0)
    parser.add_argument("--list-samples", type=int, default=300)
    parser.add_argument("--list-warmup", type=int, default=30)
    parser.add_argument("--baseline", type=int, default=300, help="unloaded create+get pairs (0: skip)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (few samples)")
    parser.add_argument("--use-running", action="store_true", help="measure the stack make up started")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.warmup, args.list_samples, args.list_warmup, args.baseline = 400, 100, 40, 10, 50
    # Each list reply is ~0.6 MB: keep the client from faulting its buffers in again on every reply, so the
    # latency measured here is not the harness's own (the services get the Makefile's malloc variables).
    keep_freed_memory()

    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        env = stack.resolve_env() if args.use_running else _private_env(Path(tmp) / "run")
        started_here = not args.use_running
        if args.use_running and stack.status(env, out=lambda _t: None) != 0:
            print("error: --use-running but the stack is down (make up)")
            return 1
        if started_here and stack.up(env, out=lambda t: print(f"  [stack] {t}", flush=True)) != 0:
            stack.down(env, out=lambda _t: None)
            return 1
        try:
            target = Target(f"http://127.0.0.1:{env_port(env, 'TT_GATEWAY_PORT', 9110)}",
                            load_tokens(env)[0].value)
            import uvloop

            results = uvloop.run(measure(target, grpc_port(env, "control"), args, cpu_meter(_stack_pids(env))))
        except (Errors, HttpError, OSError) as exc:
            print(f"error: {exc}")
            return 1
        finally:
            if started_here:
                stack.down(env, out=lambda _t: None)

    if results["baseline"]:
        print("-- unloaded, one request at a time (service time; rest = through Envoy, grpc = direct):")
        print_table(results["baseline"])
    rows = {"create+get requests": results["pair"]["create+get requests"], "create": results["pair"]["create"],
            "get": results["pair"]["get"], "list 500": results["list"]["list_500"],
            "list 500, identity": results["list_identity"]["list_500"]}
    print(f"-- open loop through Envoy: create+get at {2 * args.rate:g} requests/s, list 500 at {args.list_rate:g}/s "
          "(each request's latency, counted from when it was due):")
    print_table(rows, TARGET_P99_MS)
    print("-- extra: a create and then its get, one after the other (both latencies added):")
    print_table({"create→get sequence": results["pair"]["create→get sequence"]})
    for name in ("pair", "list", "list_identity"):
        r = results[name]
        print(f"{name}: achieved {r['achieved_per_s']}/s, {r['failed']} failed"
              + (f" (e.g. {r['failure_examples'][0]})" if r["failed"] else ""))
    for name, label in (("pair", "create+get"), ("list", "list 500"), ("list_identity", "list 500, identity")):
        used = results[name].get("cpu_us_per_request") or {}
        if used:
            print(f"CPU per {label} request: " + ", ".join(f"{k} {v / 1000:.2f} ms" for k, v in used.items()))
    listed, identity = results["list"], results["list_identity"]
    print(f"list response: {listed['response_bytes']} bytes of JSON, {listed['wire_bytes']} on the wire "
          f"({listed['content_coding']}; {identity['wire_bytes']} without Accept-Encoding); max start lag "
          f"{results['pair']['start_lag_max_ms']} ms / {listed['start_lag_max_ms']} ms / "
          f"{identity['start_lag_max_ms']} ms")
    print("list 500 asks for gzip as httpx, requests, aiohttp and browsers do by default (the client inflates "
          "it inside the measured time); 'list 500, identity' sends no Accept-Encoding")
    if args.samples < 5000:
        print(f"note: {args.samples} create+get samples (< 5000): p99.9 is indicative only")
    if not args.no_save:
        path = save_results("control_api", {
            "config": {"rate_pairs_per_s": args.rate, "samples": args.samples, "warmup": args.warmup,
                       "list_rate_per_s": args.list_rate, "list_samples": args.list_samples,
                       "list_warmup": args.list_warmup, "stack": "running" if args.use_running else "private",
                       "path": "client -> Envoy (REST/JSON) -> control (gRPC) -> PostgreSQL/Redis",
                       "client": "common.http1.Http1Client"},
            "target_p99_ms": TARGET_P99_MS,
            "results": results,
            "meets_target": {k: v["p99_ms"] <= TARGET_P99_MS for k, v in rows.items()},
        }, baseline=not args.quick and not args.use_running)
        print(f"saved {path}")
    return 0
