"""Cross-feed dedupe and durable append of leader trades: one atomic Redis script per trade.

The seen-key check, the ``XADD`` to the leader-trade log and ``SET tt:ingest:seen:{id} EX ttl`` run
in one Lua call, so a crash can never mark a trade seen without logging it (nor log it twice).

The websocket handler hands each trade to :meth:`TradeSink.put`, which writes the script call on
the sink's own pipelined connection at once (no queue, no task switch); the reply comes back in
write order, and the appended entry is published to the in-memory tail right there, so the log's
readers get trades in log order without a lock.

A lost connection leaves the outcome of the unanswered calls unknown: Redis may have applied them,
or may still apply them from its input buffer. Recovery therefore (1) drops the in-memory tail so
readers read Redis, (2) sends every unanswered trade again (the seen-key makes a repeat a no-op, and
once a repeat has set it, a late original can no longer append), (3) after those replies reads the
log's last id and lets memory cover from there. Only then do new trades flow again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace

from common import telemetry
from common.cancel import reraise_if_cancelling
from common.fastredis import Script
from common.resp import Arg, OnReply, RespClosed, RespConnection, RespError
from common.retry import Backoff
from common.streams import LEADER_TRADES
from services.ingest.events import leader_trade_event
from services.ingest.identity import Identified
from services.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("tradingtools.ingest")

SEEN_PREFIX = "tt:ingest:seen:"
_RETRY = Backoff(0.05, 2.0)

# The append goes first: a script is not rolled back, so a refused XADD must leave no seen-key behind.
DEDUPE_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'p', ARGV[2])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return id
"""
_SCRIPT = DEDUPE_APPEND.encode()
_SHA = Script(DEDUPE_APPEND).sha.encode()


class LiveTail(Protocol):
    """The log's in-memory tail (``common.streams.DurableLog``)."""

    def published(self, cursor: str, payload: bytes) -> None:
        """An entry this process appended, in log order."""

    def invalidate(self) -> None:
        """Forget memory: readers read the durable log until :meth:`prime`."""

    async def prime(self) -> None:
        """Let memory cover the log from its current end."""


@dataclass(eq=False, slots=True)
class _Job:
    item: Identified
    payload: bytes
    waiter: asyncio.Future[str | None] | None  # set for submit(); put() has nobody waiting
    publish: bool = True


class TradeSink:
    """Dedupe + append of identified trades over one pipelined connection; :meth:`run` keeps it up."""

    def __init__(self, connect: Callable[[], Awaitable[RespConnection]], tail: LiveTail, metrics: IngestMetrics, *,
                 dedupe_ttl_s: int = 7 * 86_400, maxlen: int = 1_000_000, stream: str = LEADER_TRADES,
                 on_kept: Callable[[Identified], None] | None = None, reply_timeout_s: float = 10.0,
                 backoff: Backoff = _RETRY, rng: random.Random | None = None) -> None:
        self.connect = connect
        self.tail = tail
        self.metrics = metrics
        self.dedupe_ttl_s = dedupe_ttl_s
        self.maxlen = maxlen
        self.stream = stream
        self.on_kept = on_kept
        self.reply_timeout_s = reply_timeout_s
        self.backoff = backoff
        self.rng = rng or random.Random()
        self._conn: RespConnection | None = None  # set only while trades may be written straight away
        self._waiting: deque[_Job] = deque()  # not written yet (no connection, or sent again after a loss)
        self._in_flight: deque[_Job] = deque()  # written on the current connection, unanswered
        self._loaded: RespConnection | None = None  # the connection the script was sent in full on (EVAL)
        self._wake = asyncio.Event()
        self.recoveries = 0

    def put(self, item: Identified) -> None:
        """Dedupe and append one trade as soon as possible (never blocks; the websocket handler's entry)."""
        self._enqueue([_Job(item, self._payload(item), None)])

    async def submit(self, items: list[Identified]) -> list[str | None]:
        """Dedupe and append; waits for the log cursor of each new trade (None for a duplicate)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, self._payload(item), loop.create_future()) for item in items]
        self._enqueue(jobs)
        return [await job.waiter for job in jobs if job.waiter is not None]

    @property
    def backlog(self) -> int:
        """Trades not yet confirmed by Redis."""
        return len(self._waiting) + len(self._in_flight)

    def _payload(self, item: Identified) -> bytes:
        event = leader_trade_event(item)
        if telemetry.tracing_enabled():
            with _tracer.start_as_current_span("ingest.leader_trade", attributes={"trade.id": item.id}):
                telemetry.inject(event.trace)
        else:
            event.trace.traceparent = telemetry.new_traceparent()
        return event.SerializeToString()

    def _enqueue(self, jobs: list[_Job]) -> None:
        if self._conn is not None and not self._waiting:
            self._write(self._conn, jobs)
        else:
            self._waiting.extend(jobs)
            self._wake.set()

    def _write(self, conn: RespConnection, jobs: list[_Job]) -> None:
        """The script's calls for ``jobs``: by ``EVALSHA``, but the first on a connection by ``EVAL``, which loads
        it; calls run in order, so the ones after it find it (one that does not, the script cache flushed, gets
        ``NOSCRIPT``: an error reply, and the connection is recycled)."""
        commands: list[tuple[tuple[Arg, ...], OnReply]] = []
        loaded = self._loaded is conn
        for job in jobs:
            command, script = (b"EVALSHA", _SHA) if loaded else (b"EVAL", _SCRIPT)
            commands.append(((command, script, 2, SEEN_PREFIX + job.item.id, self.stream, self.dedupe_ttl_s,
                              job.payload, self.maxlen), self._answer_for(conn, job)))
            loaded = True
        try:
            conn.write(commands)
        except RespClosed:
            self._waiting.extend(jobs)
            self._wake.set()
            return
        if jobs:
            self._loaded = conn
        self._in_flight.extend(jobs)

    def _answer_for(self, conn: RespConnection, job: _Job) -> Callable[[Any], None]:
        def answered(reply: Any) -> None:
            if isinstance(reply, RespError):  # e.g. OOM: the connection is recycled and the trade sent again
                # a flushed script cache (NOSCRIPT) is expected: the new connection loads the script again
                (log.warning if str(reply).startswith("NOSCRIPT") else log.error)(
                    "trade append refused by redis", extra={"error": str(reply)[:300]})
                conn.close(reply)
                return
            done = self._in_flight.popleft()
            assert done is job
            self._settle(job, reply)
        return answered

    def _settle(self, job: _Job, reply: Any) -> None:
        source = job.item.fill.source
        if reply:
            cursor = reply.decode() if isinstance(reply, bytes) else str(reply)
            if job.publish:
                self.tail.published(cursor, job.payload)
            self.metrics.kept(source)
            if self.on_kept is not None:
                self.on_kept(job.item)
        else:
            cursor = None
            self.metrics.duplicate(source)
        if job.waiter is not None and not job.waiter.done():
            job.waiter.set_result(cursor)

    async def run(self) -> None:
        """Keep the connection up until cancelled: connect, recover after a loss, resend, watch for stalls."""
        attempt = 0
        while True:
            try:
                conn = await self.connect()
                try:
                    await self._recover(conn)
                    attempt = 0
                    await self._serve(conn)
                finally:
                    self._conn = None
                    conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: retry, never drop a trade
                reraise_if_cancelling()
                delay = self.backoff.delay(min(attempt, 10), self.rng.random())
                attempt += 1
                log.warning("trade append connection failed; retrying",
                            extra={"error": repr(exc)[:300], "backlog": self.backlog, "delay_s": delay})
                await asyncio.sleep(delay)
            self._requeue_in_flight()

    def _requeue_in_flight(self) -> None:
        """Unanswered trades of a lost connection go first in line again, in their order."""
        if self._in_flight:
            self._waiting.extendleft(reversed(self._in_flight))
            self._in_flight.clear()

    async def _recover(self, conn: RespConnection) -> None:
        """Send what is waiting; when any of it may already be in the log, re-prime the tail after the replies."""
        self._requeue_in_flight()
        if not self._waiting:
            self._conn = conn
            return
        self.recoveries += 1
        self.tail.invalidate()
        jobs = list(self._waiting)
        self._waiting.clear()
        for job in jobs:
            job.publish = False
        loop = asyncio.get_running_loop()
        last: asyncio.Future[None] = loop.create_future()
        self._write(conn, jobs)
        if self._in_flight:  # resolves after the last resent reply (replies come in order)
            def resent(_reply: Any) -> None:
                if not last.done():
                    last.set_result(None)

            conn.write([((b"PING",), resent)])
            closed = asyncio.ensure_future(conn.wait_closed())
            try:
                await asyncio.wait([last, closed], timeout=self.reply_timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
            if not last.done():
                raise RespClosed("connection lost while resending trades")
        await self.tail.prime()
        self._conn = conn
        if self._waiting:  # trades put while recovering
            jobs, self._waiting = list(self._waiting), deque()
            self._write(conn, jobs)

    async def _serve(self, conn: RespConnection) -> None:
        """Write anything queued, and recycle the connection when it closes or stops answering."""
        closed = asyncio.ensure_future(conn.wait_closed())
        try:
            while not conn.closed:
                reraise_if_cancelling()  # redis-py (the tail's prime) can swallow a cancellation
                self._wake.clear()
                if self._waiting and self._conn is conn:
                    jobs, self._waiting = list(self._waiting), deque()
                    self._write(conn, jobs)
                waited = conn.oldest_pending_s(time.monotonic())
                if waited > self.reply_timeout_s:
                    raise RespClosed(f"no reply from redis for {waited:.1f}s")
                wake = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait([wake, closed], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
        finally:
            closed.cancel()
        raise RespClosed(f"connection closed: {conn.close_reason!r}")
