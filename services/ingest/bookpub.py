"""Book side effects: snapshots to Redis, ticks to the PRICE_TICKS log, the feed's beat, market info and
REST resyncs of books the socket did not keep in sync.

The publisher coalesces: while one Redis round trip is in flight, further changes accumulate and go
in the next pipeline, so a burst of deltas costs one write per asset, yet every tick (built when the
change happened) is appended in order. The beat (``tt:bookfeed``) goes after the books of its write, so
a reader that saw a beat finds every change received before it in the books. Ticks Redis does not take wait in
memory; past ``backlog_max`` of them, the old ones guard can do without are dropped (:meth:`BookPublisher._thin`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.cancel import reraise_if_cancelling
from common.decimals import fmt
from common.marketstate import BOOK_FEED_KEY, FeedBeat, book_key, market_key
from common.resp import Arg, RespClosed, RespConnection, RespError
from common.retry import Backoff
from common.streams import PRICE_TICKS, note_appended
from services.ingest.books import BookState, Touched
from services.ingest.metrics import IngestMetrics
from services.ingest.tickgate import PRICE_KINDS, TickGate
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)
_ZERO = Decimal(0)  # (not a price: _thin's mark of a text not parsed yet)
_KIND_NAMES = {v: k for k, v in mpb.TickKind.items()}

# One XADD per tick in a MULTI, pipelined with the rest of the write on the hand-written RESP connection (a
# Lua script appending a flush's ticks cost Redis ~20 µs a call more than the XADDs it ran). The MULTI wakes
# a blocked reader once per write, not at its first tick. Entries are one tick each (field ``p``).
_BOOK_PREFIX = book_key("")
_RETRY = Backoff(0.05, 2.0)
BACKLOG_MAX = 50_000  # ticks waiting (Redis not answering) past which the old ones are thinned (_thin)
FRESH_S = 5.0  # ticks received this recently are never thinned: guard may still fire on them (tick_max_age_s 2 s)


@dataclass(eq=False, slots=True)
class _Flush:
    """What one write carried (put back in line if Redis does not confirm it)."""

    dirty: dict[str, None]
    ticks: list[bytes]
    tick_sizes: dict[str, Decimal]
    done: asyncio.Future[bool]
    beat: FeedBeat | None = None
    gone: dict[str, None] = field(default_factory=dict)
    errors: list[RespError] = field(default_factory=list)


class BookPublisher:
    """Writes dirty books and queued ticks to Redis, one coalesced write per flush on its own connection.

    Commands go on a pipelined :class:`~common.resp.RespConnection` (redis-py's pipeline cost ~100 µs of
    CPU per flush). A change schedules a write for the end of the current loop pass (so every frame of a
    socket read goes in one write), and no task switch: the write goes out from a loop callback and the
    next one from the reply callback of the previous. One write is in flight at a time; what changes
    meanwhile goes in the next. Books are written before the ticks of the same write, so a reader that
    saw a tick finds a book at least as new. A write Redis refuses or leaves unanswered is put back in
    line before anything newer and sent again on a new connection (a tick may then be logged twice).
    """

    def __init__(self, connect: Callable[[], Awaitable[RespConnection]], books: BookState, metrics: IngestMetrics,
                 *, depth: int = 100, maxlen: int = 1_000_000, stream: str = PRICE_TICKS,
                 on_market: Callable[[str, str], None] = lambda _a, _c: None, reply_timeout_s: float = 10.0,
                 backoff: Backoff = _RETRY, rng: random.Random | None = None, gate: TickGate | None = None,
                 backlog_max: int = BACKLOG_MAX, fresh_s: float = FRESH_S) -> None:
        self.connect = connect
        self.books = books
        self.metrics = metrics
        self.depth = depth
        self.maxlen = maxlen
        self.stream = stream
        self.on_market = on_market
        self.reply_timeout_s = reply_timeout_s
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.gate = gate  # which ticks go to the log (guard's price bands); None: every one
        self.backlog_max, self.fresh_ns = backlog_max, int(fresh_s * 1e9)
        self._thin_at = backlog_max
        self._conn: RespConnection | None = None
        self._dirty: dict[str, None] = {}
        self._ticks: list[bytes] = []
        self._tick_sizes: dict[str, Decimal] = {}
        self._beat: FeedBeat | None = None
        self._gone: dict[str, None] = {}  # assets no longer watched: their stored books are deleted
        self._kinds: Counter[int] = Counter()  # ticks emitted and not counted yet, by kind
        self._in_flight: _Flush | None = None
        self._scheduled = False
        self.flushes = 0

    def mark(self, touched: Touched, recv_ns: int) -> None:
        """Record a change: the book is rewritten, and a tick goes out when ``touched.emit`` (and the gate lets it
        through: it may also restamp it)."""
        asset_id, kind, emit = touched
        if self._gone:  # watched again: written, not deleted
            self._gone.pop(asset_id, None)
        self._dirty[asset_id] = None
        if emit:
            book = self.books.books.get(asset_id)
            if book is not None:
                gate = self.gate
                if gate is not None and book.emitted is not None:
                    recv_ns = gate.admit(asset_id, kind, book.emitted, recv_ns)
                if recv_ns:
                    self._ticks.append(self.books.tick_bytes(asset_id, kind, recv_ns))
                    self._kinds[kind] += 1
                if kind == mpb.TICK_KIND_TICK_SIZE_CHANGE:
                    self._tick_sizes[asset_id] = book.tick_size
        if not self._scheduled or len(self._ticks) > self._thin_at:  # else a send is already due: nothing to add
            self._schedule()

    def check(self, asset_ids: list[str]) -> None:
        """The bands of these assets changed (guard's, or the gate's narrowing of them ended): a tick of each price
        left out since a trigger change that is outside its new band (``TickGate.replay``), then of each whose current
        top is."""
        gate, books = self.gate, self.books.books
        if gate is None:
            return
        now_ns = time.time_ns()
        for asset_id in asset_ids:
            book = books.get(asset_id)
            if book is None or book.emitted is None:
                continue
            for stamp, top, observed_ns in gate.replay(asset_id, now_ns):
                self._ticks.append(self.books.left_out_tick(asset_id, top, stamp, observed_ns))
                self._kinds[mpb.TICK_KIND_PRICE_CHANGE] += 1
            stamp = gate.recheck(asset_id, book.top(), now_ns)
            if stamp:
                self._ticks.append(self.books.tick_bytes(asset_id, mpb.TICK_KIND_PRICE_CHANGE, stamp))
                self._kinds[mpb.TICK_KIND_PRICE_CHANGE] += 1
        if self._ticks:
            self._schedule()

    def forget(self, asset_ids: set[str]) -> None:
        """These assets are not watched any more: their stored books are deleted. Left stored, a book carries the
        session's id, and every beat of that session would vouch for it as fresh, frozen as it was when the asset
        was dropped (also once the asset is watched again, until its new snapshot is written)."""
        for asset_id in asset_ids:
            self._dirty.pop(asset_id, None)
            self._gone[asset_id] = None
        if asset_ids:
            self._schedule()

    def beat(self, beat: FeedBeat) -> None:
        """Store the feed's beat after everything marked before it (a newer beat replaces one not sent yet)."""
        self._beat = beat
        self._schedule()

    def _schedule(self) -> None:
        if len(self._ticks) > self._thin_at:
            self._thin()
        if not self._scheduled and self._in_flight is None and self._conn is not None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    def _thin(self) -> None:
        """Too many ticks wait (Redis does not answer): drop those guard can do without. Kept: each asset's latest,
        every one younger than ``fresh_ns`` (guard may fire on it), every one not of a price kind, and each price
        tick with a price (best bid, mid or last trade) above or below all later ticks' of its asset and staleness:
        guard still lifts every trailing mark to the highest price after any arm, and holds what a late price
        crossed."""
        cutoff, ticks = time.time_ns() - self.fresh_ns, self._ticks
        seen: dict[tuple[str, bool], tuple[list[Decimal | None], list[Decimal | None]]] = {}
        latest: set[str] = set()
        numbers: dict[str, Decimal | None] = {"": None}
        kept: list[bytes] = []
        for raw in reversed(ticks):
            tick = mpb.PriceTick.FromString(raw)
            keep = tick.kind not in PRICE_KINDS or tick.received_time_ns >= cutoff or tick.asset_id not in latest
            latest.add(tick.asset_id)
            if tick.kind in PRICE_KINDS:
                high, low = seen.setdefault((tick.asset_id, tick.stale), ([None] * 3, [None] * 3))
                for i, text in enumerate((tick.best_bid, tick.mid, tick.last_trade_price)):
                    if (price := numbers.get(text, _ZERO)) is _ZERO:
                        price = numbers[text] = Decimal(text)
                    if price is not None:
                        if (top := high[i]) is None or price > top:
                            high[i], keep = price, True
                        if (bottom := low[i]) is None or price < bottom:
                            low[i], keep = price, True
            if keep:
                kept.append(raw)
        kept.reverse()
        self._ticks = kept
        self._thin_at = max(self.backlog_max, 2 * len(kept))
        self.metrics.book_ticks_thinned(len(ticks) - len(kept))
        log.warning("book publish backlog thinned", extra={"ticks": len(ticks), "kept": len(kept)})

    @property
    def pending(self) -> bool:
        """True while something changed is not confirmed by Redis yet."""
        return bool(self._dirty or self._ticks or self._tick_sizes or self._beat or self._gone
                    or self._in_flight is not None)

    async def flush(self) -> None:
        """Write everything pending and wait until Redis confirmed it (raises if it refused or closed)."""
        if self._conn is None or self._conn.closed:
            self._conn = await self.connect()
        while self.pending:
            if self._in_flight is None:
                self._send()
            flush = self._in_flight
            if flush is None:
                raise RespClosed("book publish: connection closed")
            if not await flush.done:
                raise flush.errors[0] if flush.errors else RespClosed("book publish: connection closed")

    def _send(self) -> None:
        """Write what is pending (unless a write is in flight: its reply sends the rest)."""
        self._scheduled = False
        conn = self._conn
        if self._in_flight is not None or conn is None or conn.closed:
            return
        dirty, ticks, tick_sizes, beat, gone = self._dirty, self._ticks, self._tick_sizes, self._beat, self._gone
        if not (dirty or ticks or tick_sizes or beat or gone):
            return
        self._dirty, self._ticks, self._tick_sizes, self._beat, self._gone = {}, [], {}, None, {}
        self._thin_at = self.backlog_max
        if self._kinds:
            for kind, n in self._kinds.items():
                self.metrics.tick(_KIND_NAMES.get(kind) or str(kind), n)
            self._kinds.clear()
        commands: list[tuple[Arg, ...]] = []
        if gone:
            commands.append((b"DEL", *[_BOOK_PREFIX + asset_id for asset_id in gone]))
        books, depth, on_market, session = self.books.books, self.depth, self.on_market, self.books.session
        snapshots: list[Arg] = [b"MSET"]
        for asset_id in dirty:
            book = books.get(asset_id)
            if book is not None:
                snapshots.append(_BOOK_PREFIX + asset_id)
                snapshots.append(book.snapshot_json(depth, session))
                if book.condition_id:
                    on_market(asset_id, book.condition_id)
        if len(snapshots) > 1:
            commands.append(tuple(snapshots))
        now_ms = str(int(time.time() * 1000))
        for asset_id, size in tick_sizes.items():
            commands.append((b"HSET", market_key(asset_id), b"asset_id", asset_id, b"tick_size", fmt(size),
                             b"updated_ms", now_ms))
        appended = -1  # the EXEC whose reply ends with the id of the last tick: the log's end
        if ticks:
            stream, maxlen = self.stream, self.maxlen
            commands.append((b"MULTI",))
            commands.extend([(b"XADD", stream, b"MAXLEN", b"~", maxlen, b"*", b"p", tick) for tick in ticks])
            commands.append((b"EXEC",))
            appended = len(commands) - 1
        if beat is not None:  # last: it vouches for the books written before it
            commands.append((b"SET", BOOK_FEED_KEY, beat.to_json()))
        flush = self._in_flight = _Flush(dirty, ticks, tick_sizes, asyncio.get_running_loop().create_future(),
                                         beat, gone=gone)
        if not commands:
            self._settle(flush)
            return
        last = len(commands) - 1
        try:
            other = self._answer(flush, False, False)  # one callback for every command but the ends
            conn.write([(args, self._answer(flush, i == last, i == appended) if i in (last, appended)
                         else other) for i, args in enumerate(commands)])
        except RespClosed:
            self._give_back()

    def _answer(self, flush: _Flush, last: bool, ticks: bool) -> Callable[[Any], None]:
        def answered(reply: Any) -> None:
            if isinstance(reply, RespError):
                flush.errors.append(reply)
            elif ticks and isinstance(reply, list) and reply:  # the ids of the ticks appended
                refused = [r for r in reply if isinstance(r, Exception)]
                if refused:
                    flush.errors.append(RespError(str(refused[0])))
                else:  # the last one is the log's end (common.streams)
                    end = reply[-1]
                    note_appended(self.stream, end.decode() if isinstance(end, bytes) else str(end))
            if last:
                self._settle(flush)
        return answered

    def _settle(self, flush: _Flush) -> None:
        if flush is not self._in_flight:
            return
        if flush.errors:
            log.warning("book publish refused by redis", extra={"error": str(flush.errors[0])[:300]})
            self._give_back()
            if self._conn is not None:
                self._conn.close(flush.errors[0])  # run() reconnects and sends again
            return
        self._in_flight = None
        self.flushes += 1
        flush.done.set_result(True)
        if self._dirty or self._ticks or self._tick_sizes or self._beat or self._gone:
            self._send()

    def _give_back(self) -> None:
        """The write in flight goes back in line, before anything changed since."""
        flush, self._in_flight = self._in_flight, None
        if flush is None:
            return
        dirty = flush.dirty
        dirty.update(self._dirty)
        self._dirty = dirty
        self._ticks[:0] = flush.ticks
        for asset_id, size in flush.tick_sizes.items():
            self._tick_sizes.setdefault(asset_id, size)
        if self._beat is None:
            self._beat = flush.beat
        for asset_id in flush.gone:  # unless watched again meanwhile (its book is then marked dirty)
            if asset_id not in self._dirty:
                self._gone[asset_id] = None
        if not flush.done.done():
            flush.done.set_result(False)

    def close(self) -> None:
        """Close the connection; what it left unconfirmed goes back in line."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._give_back()

    async def run(self) -> None:
        """Keep a connection up until cancelled: writes flow from :meth:`mark`; a lost connection is replaced."""
        attempt = 0
        try:
            while True:
                try:
                    conn = await self.connect()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Redis down: keep the pending state, retry
                    reraise_if_cancelling()
                    delay = self.backoff.delay(min(attempt, 8), self.rng.random())
                    attempt += 1
                    log.warning("book publish connection failed", extra={"error": repr(exc)[:300], "delay_s": delay})
                    await asyncio.sleep(delay)
                    continue
                flushes = self.flushes
                self._conn = conn
                self._send()
                await self._watch(conn)
                self.close()
                # back off only when nothing got through (e.g. Redis refuses every write)
                attempt = 0 if self.flushes > flushes else attempt + 1
                delay = self.backoff.delay(min(attempt, 8), self.rng.random()) if attempt else 0.0
                log.warning("book publish connection lost", extra={"error": repr(conn.close_reason)[:300],
                                                                   "delay_s": delay})
                await asyncio.sleep(delay)
        finally:
            self.close()

    async def _watch(self, conn: RespConnection) -> None:
        """Return when ``conn`` closes or leaves a write unanswered for ``reply_timeout_s``."""
        closed = asyncio.ensure_future(conn.wait_closed())
        try:
            while not conn.closed:
                await asyncio.wait([closed], timeout=min(1.0, self.reply_timeout_s))
                if conn.oldest_pending_s(time.monotonic()) > self.reply_timeout_s:
                    conn.close(RespClosed(f"no reply from redis for {self.reply_timeout_s}s"))
        finally:
            closed.cancel()
