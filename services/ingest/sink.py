"""Cross-feed dedupe and durable append of leader trades: one atomic Redis script per trade.

``SET tt:ingest:seen:{id} NX EX ttl`` and the ``XADD`` to the leader-trade log run in one Lua call,
so a crash can never mark a trade seen without logging it (nor log it twice). A retried batch whose
reply was lost finds its ids already set: nothing doubles.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from redis.exceptions import NoScriptError

from common import telemetry
from common.retry import Backoff
from common.streams import LEADER_TRADES
from services.ingest.aio import reraise_if_cancelling
from services.ingest.events import leader_trade_event
from services.ingest.identity import Identified
from services.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("tradingtools.ingest")

SEEN_PREFIX = "tt:ingest:seen:"
_RETRY = Backoff(0.05, 2.0)

_DEDUPE_APPEND = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'p', ARGV[2])
end
return false
"""


class TradeSink:
    """Dedupe + append for identified trades; ``on_kept`` hears about each new trade's asset."""

    def __init__(self, redis: Any, metrics: IngestMetrics, *, dedupe_ttl_s: int = 7 * 86_400,
                 maxlen: int = 1_000_000, stream: str = LEADER_TRADES,
                 on_kept: Callable[[Identified], None] | None = None, timeout_s: float = 5.0,
                 on_appended: Callable[[str, bytes], None] | None = None) -> None:
        self.redis = redis
        self.on_appended = on_appended
        self._lock = asyncio.Lock()  # the worker and the poller both submit: appends stay in log order
        self.metrics = metrics
        self.dedupe_ttl_s = dedupe_ttl_s
        self.maxlen = maxlen
        self.stream = stream
        self.on_kept = on_kept
        self.timeout_s = timeout_s
        self._sha = ""

    async def submit(self, items: list[Identified]) -> list[str | None]:
        """Dedupe and append in one round trip; the log cursor of each new trade, None for duplicates."""
        if not items:
            return []
        calls = []
        for item in items:
            with _tracer.start_as_current_span("ingest.leader_trade", attributes={"trade.id": item.id}):
                event = leader_trade_event(item)
                telemetry.inject(event.trace)
            calls.append((SEEN_PREFIX + item.id, self.stream, self.dedupe_ttl_s, event.SerializeToString(),
                          self.maxlen))
        async with self._lock:
            async with asyncio.timeout(self.timeout_s):
                try:
                    replies = await self._run(calls)
                except NoScriptError:  # Redis restarted or flushed its script cache: load again, retry (idempotent)
                    self._sha = ""
                    replies = await self._run(calls)
            if self.on_appended is not None:
                for call, reply in zip(calls, replies, strict=True):
                    if reply:
                        self.on_appended(reply.decode() if isinstance(reply, bytes) else str(reply), call[3])
        out: list[str | None] = []
        for item, reply in zip(items, replies, strict=True):
            source = item.fill.source
            if reply:
                cursor = reply.decode() if isinstance(reply, bytes) else str(reply)
                out.append(cursor)
                self.metrics.kept(source)
                if self.on_kept is not None:
                    self.on_kept(item)
            else:
                out.append(None)
                self.metrics.duplicate(source)
        return out


    async def _run(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        if not self._sha:
            self._sha = await self.redis.script_load(_DEDUPE_APPEND)
        if len(calls) == 1:
            seen, stream, *args = calls[0]
            return [await self.redis.evalsha(self._sha, 2, seen, stream, *args)]
        pipe = self.redis.pipeline(transaction=False)
        for seen, stream, *args in calls:
            pipe.evalsha(self._sha, 2, seen, stream, *args)
        return list(await pipe.execute())


class SinkWorker:
    """Drains a queue of identified trades into the sink in batches, retrying until Redis takes them."""

    def __init__(self, sink: TradeSink, *, max_batch: int = 256, backoff: Backoff = _RETRY,
                 rng: random.Random | None = None) -> None:
        self.sink = sink
        self.queue: asyncio.Queue[Identified] = asyncio.Queue()
        self.max_batch = max_batch
        self.backoff = backoff
        self.rng = rng or random.Random()

    def put(self, item: Identified) -> None:
        """Queue one trade (never blocks the websocket reader)."""
        self.queue.put_nowait(item)

    async def run(self) -> None:
        """Run until cancelled."""
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            attempt = 0
            while True:
                try:
                    await self.sink.submit(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Redis down: retry, never drop a trade
                    reraise_if_cancelling()
                    delay = self.backoff.delay(min(attempt, 10), self.rng.random())
                    attempt += 1
                    log.warning("trade append failed; retrying",
                                extra={"error": repr(exc)[:300], "batch": len(batch), "delay_s": delay})
                    await asyncio.sleep(delay)
