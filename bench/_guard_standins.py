"""What bench guard runs guard against: ingest and executor stand-ins, the PostgreSQL sampler, guard's logged load."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from common.streams import DurableLog, serve_log
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc


class _Ingest(mgrpc.IngestServiceServicer):
    def __init__(self, log_: DurableLog) -> None:
        self.log = log_
        self.connected = asyncio.Event()

    async def StreamPriceTicks(self, request, context):
        def build(cursor: str, payload: bytes) -> mpb.StreamPriceTicksResponse:
            return mpb.StreamPriceTicksResponse(cursor=cursor, tick=mpb.PriceTick.FromString(payload))

        cursor = await self.log.resolve(request.after_cursor)
        self.connected.set()
        async for item in serve_log(self.log, cursor, build):
            yield item


@dataclass
class _Executor(egrpc.ExecutorServiceServicer):
    arrivals: list[tuple[int, epb.Order]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    async def SubmitOrder(self, request, context):
        arrival = time.time_ns()
        order = request.order
        duplicate = order.client_order_id in self.seen
        self.seen.add(order.client_order_id)
        self.arrivals.append((arrival, order))
        return epb.SubmitOrderResponse(client_order_id=order.client_order_id, duplicate=duplicate)

    async def StreamOrderEvents(self, request, context):
        await asyncio.Event().wait()
        yield epb.StreamOrderEventsResponse()  # pragma: no cover - never reached

    async def StreamOrderEventBatches(self, request, context):
        await asyncio.Event().wait()
        yield epb.StreamOrderEventBatchesResponse()  # pragma: no cover - never reached


def _load_s_from_log(path: Path) -> float | None:
    for line in path.read_text(errors="replace").splitlines():
        if '"armed triggers loaded"' in line:
            try:
                return float(json.loads(line)["load_s"])
            except (ValueError, KeyError):
                return None
    return None


class _PgSampler:
    """Samples ``pg_stat_activity`` every 10 ms on a thread: which statements PostgreSQL is busy with (share of
    samples with that statement active, by its first words)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.counts: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            while not self._stop.wait(0.01):
                self.samples += 1
                for (query,) in conn.execute("SELECT query FROM pg_stat_activity WHERE state = 'active'"
                                             " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"):
                    key = " ".join((query or "").split()[:6])[:70]
                    self.counts[key] = self.counts.get(key, 0) + 1

    def stop(self) -> dict[str, float]:
        if not self._thread.is_alive():
            return {}
        self._stop.set()
        self._thread.join(5)
        top = sorted(self.counts.items(), key=lambda kv: -kv[1])[:12]
        return {k: round(v / max(self.samples, 1), 3) for k, v in top}
