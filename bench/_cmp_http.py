"""``bench compare http``: the executor's HTTP/1 client against httpx with an unlimited pool
(``httpx.Limits(max_connections=None, max_keepalive_connections=None)``) and aiohttp (``limit=0``).

Against the Insiders fake (``sim.insiders`` on ``sim.httpserve``, its own process), each client sends the
executor's order POST (``request_body``, ``Idempotency-Key``, bearer token) and reads the whole answer:

- ``burst1000``: 1,000 concurrent POSTs, after a warm-up burst that opened the connections; ``last_ms`` is
  the last POST's arrival at the fake (kernel receive time) after the burst started, ``cpu_us`` this
  client process's CPU per POST of the burst;
- ``single``: one POST at a time on a warm connection (measured first, while the client has that one
  connection: httpx's pool scans every connection it holds per request): p50 / p99 and CPU per POST.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import orjson
import uvloop

from bench._cmp_measure import sequential
from common.http1 import Http1Client
from services.executor.adapters.insiders_api import request_body
from services.executor.domain.venue_orders import PlaceRequest

SIDES = ("http1", "httpx-unlimited", "aiohttp")
ASSET = "7" * 76


def _body(coid: str, i: int) -> bytes:
    return request_body(PlaceRequest(coid, "u", f"w_{i}", "0xp", ASSET, "BUY", "FAK", Decimal("1"), None,
                                     Decimal("0.51")))


class _Client:
    """One POST with each library, the answer read whole."""

    def __init__(self, side: str, url: str, token: str) -> None:
        self.side, self.url = side, url
        auth = {"Authorization": f"Bearer {token}"}
        if side == "http1":
            self.h1 = Http1Client(url, default_headers=auth)
        elif side == "httpx-unlimited":
            self.hx = httpx.AsyncClient(base_url=url, headers=auth, timeout=120, limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=None))
        else:
            self.aio = aiohttp.ClientSession(url, headers=auth, connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=120))

    async def post(self, coid: str, body: bytes) -> bytes:
        if self.side == "http1":
            raw = b"Idempotency-Key: %b\r\nContent-Type: application/json\r\n" % coid.encode()
            return (await self.h1.request("POST", "/v1/orders", body=body, raw_headers=raw, timeout_s=120)).body
        headers = {"Idempotency-Key": coid, "Content-Type": "application/json"}
        if self.side == "httpx-unlimited":
            return (await self.hx.post("/v1/orders", content=body, headers=headers)).content
        async with self.aio.post("/v1/orders", data=body, headers=headers) as resp:
            return await resp.read()

    async def close(self) -> None:
        if self.side == "http1":
            await self.h1.close()
        elif self.side == "httpx-unlimited":
            await self.hx.aclose()
        else:
            await self.aio.close()


async def _posts(admin: Http1Client) -> list[dict[str, Any]]:
    posts: list[dict[str, Any]] = orjson.loads((await admin.request("GET", "/_sim/posts", timeout_s=30)).body)["posts"]
    return posts


async def _side(side: str, url: str, token: str, bursts: int, run_id: str, size: int) -> dict[str, float]:
    admin = Http1Client(url, default_headers={"Authorization": f"Bearer {token}"})
    client = _Client(side, url, token)
    out: dict[str, float] = {}
    try:
        async def burst(tag: str) -> tuple[int, float]:
            reqs = [(f"co_{run_id}_{tag}_{i}", _body(f"co_{run_id}_{tag}_{i}", i)) for i in range(size)]
            c0, t0 = time.process_time(), time.time_ns()
            answers = await asyncio.gather(*(client.post(c, b) for c, b in reqs))
            assert all(a.startswith(b"{") for a in answers)
            return t0, time.process_time() - c0

        out |= await sequential("single", lambda i: client.post(f"co_{run_id}_s_{i}", _body(f"co_{run_id}_s_{i}", i)),
                                size * 3 // 10, warm=30)  # first: on the one connection a lone POST uses
        await burst("warm")
        lasts, cpus = [], []
        for b in range(max(3, bursts // 4)):
            await admin.request("POST", "/_sim/reset", timeout_s=10)  # the fake keeps every POST's record
            t0, cpu = await burst(str(b))
            posts = await _posts(admin)
            mine = [p["arrivalNs"] for p in posts if p["clientOrderId"].startswith(f"co_{run_id}_{b}_")]
            assert len(mine) == size, len(mine)
            lasts.append((max(mine) - t0) / 1e6)
            cpus.append(cpu / size * 1e6)
        out["burst1000.last_ms"] = round(statistics.median(lasts), 1)
        out["burst1000.cpu_us"] = round(statistics.median(cpus), 1)
    finally:
        await client.close()
        await admin.close()
    return out


async def _prepare(url: str, token: str) -> None:
    admin = Http1Client(url, default_headers={"Authorization": f"Bearer {token}"})
    book = {"bids": [["0.49", "1000000000"]], "asks": [["0.50", "1000000000"]]}
    answer = await admin.request("PUT", f"/_sim/books/{ASSET}", body=orjson.dumps(book), timeout_s=10)
    assert answer.status == 200, answer
    await admin.close()


def prepare(params: dict[str, Any]) -> None:
    """Give the fake a deep book for the asset every order is for."""
    uvloop.run(_prepare(params["url"], params["token"]))


def run(side: str, params: dict[str, Any]) -> dict[str, float]:
    """One client's metrics."""
    size = 50 if params.get("quick") else 1000  # --quick: a smoke run
    return uvloop.run(_side(side, params["url"], params["token"], params["bursts"], params["run_id"], size))
