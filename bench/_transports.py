"""The HTTP clients alone: concurrent order POSTs from this process to the Insiders fake in its own
process, to the last arrival, for ``common.http1`` (the executor's transport), aiohttp and
httpx with an unlimited pool (each after a warm-up burst on the same client, so connections are open)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import orjson

from bench import summarize
from common.config import Secret, project_root
from services.executor.adapters.insiders_api import InsidersVenue, request_body
from services.executor.domain.venue_orders import PlaceRequest


def _burst_requests(prefix: str, n: int, asset: str) -> list[PlaceRequest]:
    return [PlaceRequest(f"co_{prefix}_{i}", "u", f"w_{i}", "0xp", asset, "BUY", "FAK", Decimal("1"), None,
                         Decimal("0.51")) for i in range(n)]


async def _burst_http1(url: str, n: int, run: int, token: str, asset: str) -> int:
    venue = InsidersVenue(url, Secret(token), post_timeout_s=120)
    await asyncio.gather(*(venue.place(r) for r in _burst_requests(f"http1w_{run}", n, asset)))  # warm connections
    reqs = _burst_requests(f"http1_{run}", n, asset)
    t0 = time.time_ns()
    await asyncio.gather(*(venue.place(r) for r in reqs))
    await venue.close()
    return t0


async def _burst_aiohttp(url: str, n: int, run: int, token: str, asset: str) -> int:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {token}"}) as s:
        async def one(r: PlaceRequest) -> None:
            headers = {"Idempotency-Key": r.client_order_id, "Content-Type": "application/json"}
            async with s.post(f"{url}/v1/orders", data=request_body(r), headers=headers) as resp:
                await resp.read()

        await asyncio.gather(*(one(r) for r in _burst_requests(f"aiohttpw_{run}", n, asset)))  # warm connections
        reqs = _burst_requests(f"aiohttp_{run}", n, asset)
        t0 = time.time_ns()
        await asyncio.gather(*(one(r) for r in reqs))
    return t0


async def _burst_httpx(url: str, n: int, run: int, token: str, asset: str) -> int:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120, limits=limits) as client:
        def one(r: PlaceRequest) -> Any:
            return client.post(f"{url}/v1/orders", content=request_body(r),
                               headers={"Idempotency-Key": r.client_order_id, "Content-Type": "application/json"})

        await asyncio.gather(*(one(r) for r in _burst_requests(f"httpxw_{run}", n, asset)))  # warm connections
        reqs = _burst_requests(f"httpx_{run}", n, asset)
        t0 = time.time_ns()
        await asyncio.gather(*(one(r) for r in reqs))
    return t0


async def compare_transports(orders: int, runs: int, token: str, asset: str) -> dict[str, Any]:
    """Each client alone from this process: ``orders`` concurrent POSTs to the fake in its own process, to
    the last arrival, ``runs`` times per client."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "sim.insiders", "--port", "0", "--token", token,
                                                cwd=project_root(), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = (await proc.stdout.readline()).decode().strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as admin:
            book = {"bids": [["0.49", "1000000000"]], "asks": [["0.50", "1000000000"]]}
            async with admin.put(f"{url}/_sim/books/{asset}", data=orjson.dumps(book)) as r:
                r.raise_for_status()
            bursts = (("http1", _burst_http1), ("aiohttp", _burst_aiohttp), ("httpx", _burst_httpx))
            results: dict[str, list[float]] = {name: [] for name, _ in bursts}
            for run in range(runs):
                for name, burst in bursts:
                    async with admin.get(f"{url}/_sim/posts?since=0") as r:
                        since = (await r.json())["next"]
                    t0 = await burst(url, orders, run, token, asset)
                    async with admin.get(f"{url}/_sim/posts?since={since}") as r:
                        posts = [p for p in (await r.json())["posts"]
                                 if p["clientOrderId"].startswith(f"co_{name}_{run}_")]
                    last = max(p["arrivalNs"] for p in posts)
                    results[name].append((last - t0) / 1e6)
                    print(f"transport {name:<8} run {run + 1}: last of {len(posts)} POSTs at "
                          f"{results[name][-1]:7.1f} ms", flush=True)
    finally:
        proc.terminate()
        await proc.wait()
    return {name: summarize(v) for name, v in results.items()}
