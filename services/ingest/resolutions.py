"""Market resolutions, recorded once in PostgreSQL and appended to ``tt:stream:market_resolutions`` (outbox).

:meth:`ResolutionRecorder.record` inserts the resolution with ``ON CONFLICT (condition_id) DO NOTHING``: the
first source to record a market wins. A later one with the same winner changes nothing (DUPLICATE); one with
another winner is logged as an error, counted, raises a critical RESOLUTION_CONTRADICTED alert (once per market
and winner) and is never applied (CONTRADICTED). Tokens are recorded in
outcome-index order, the order CLOB REST lists them in (a socket frame's resolution takes it from the cached
market info); a REST confirmation listing a recorded row's tokens in another order puts the row right
(ORDER_DIFFERS, logged, counted). A new row is then published: the market's cached info (``tt:market:{asset}``)
becomes closed with its ``resolved_winner`` for every token, a REST-found resolution also gets one
MARKET_RESOLVED PriceTick per token (the socket path had the book state emit them), the event is appended to
the log and the row's ``appended_cursor`` set. A failure anywhere in that leaves ``appended_cursor`` NULL and
:meth:`ResolutionRecorder.sweep` (every few seconds, and at start) does it again from the stored payload;
before appending it looks for the market in the log's newest entries, so a crash between the append and the
update does not append the event twice. Every step is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from google.protobuf.message import DecodeError

from common import telemetry
from common.alerts import AlertKind, Severity, raise_alert
from common.cancel import reraise_if_cancelling
from common.marketstate import RESOLVED_WINNER, MarketInfo, read_market, write_market
from common.streams import DurableLog
from services.ingest import clob
from services.ingest import resolution as rs
from services.ingest.metrics import IngestMetrics
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)

EMITTED = "EMITTED"
DUPLICATE = "DUPLICATE"
SWEEP_S = 5.0
LOG_SCAN = 2000  # newest log entries searched for a market before the sweep appends it
_SOURCE_NAMES = {v: k for k, v in rs.SOURCES.items()}

_INSERT = """
INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, winning_outcome, market_slug, neg_risk,
  source, confirmed, venue_time, received_at, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (condition_id) DO NOTHING
RETURNING condition_id
"""
_EXISTING = """
SELECT winning_asset_id, source, asset_ids, payload, appended_cursor IS NULL AS unappended
  FROM market_resolutions WHERE condition_id = %s
"""
ORDER_DIFFERS = "ORDER_DIFFERS"
# a row recorded with its tokens in another order than CLOB REST lists them (the outcome index): put right, and
# so is its payload while it waits for the sweep to append it (an appended event is never rewritten)
_REORDER = """
UPDATE market_resolutions SET asset_ids = %s, payload = CASE WHEN appended_cursor IS NULL THEN %s ELSE payload END
 WHERE condition_id = %s AND winning_asset_id = %s
"""
MAX_TOKENS = 64  # a market_resolved frame naming more tokens is not looked up token by token (REST decides)
_UNAPPENDED = """
SELECT condition_id, payload FROM market_resolutions WHERE appended_cursor IS NULL ORDER BY received_at LIMIT 100
"""
_APPENDED = """
UPDATE market_resolutions SET appended_cursor = %s, appended_at = now()
 WHERE condition_id = %s AND appended_cursor IS NULL
"""


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def resolved_ticks(res: mpb.MarketResolution) -> list[bytes]:
    """One MARKET_RESOLVED PriceTick per token of the market (what guard cancels armed triggers on)."""
    return [mpb.PriceTick(asset_id=asset_id, condition_id=res.condition_id, kind=mpb.TICK_KIND_MARKET_RESOLVED,
                          winning_asset_id=res.winning_asset_id, venue_time_ms=res.venue_time_ms,
                          received_time_ns=res.received_time_ns, trace=res.trace).SerializeToString()
            for asset_id in res.asset_ids]


async def close_markets(redis: Any, condition_id: str, asset_ids: Iterable[str], *, winner: str = "",
                        infos: Iterable[MarketInfo] = (), neg_risk: bool = False, market_slug: str = "",
                        now_ms: int | None = None) -> None:
    """Mark every token's cached market info closed and not accepting orders (``winner``: resolved, which keeps
    it closed whatever a later write says). Starts from what is cached (its other fields stay as they are), else
    ``infos`` (a REST answer), else a minimal entry (the tick size of a closed market no longer matters) without
    a condition id: nothing takes its neg-risk flag, which nobody confirmed, for the market's."""
    fresh = {i.asset_id: i for i in infos}
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    for asset_id in asset_ids:
        info = await read_market(redis, asset_id) or fresh.get(asset_id)
        if info is None:
            info = MarketInfo(asset_id, "", Decimal("0.01"), Decimal(0), neg_risk=neg_risk, market_slug=market_slug)
        extra = {**info.extra, RESOLVED_WINNER: winner} if winner else info.extra
        await write_market(redis, replace(info, closed=True, accepting_orders=False, updated_ms=now_ms, extra=extra))


def _misordered(existing: Any, res: rs.Resolution) -> bool:
    """A REST resolution of the same winner lists the recorded tokens in another order (REST's is the outcome
    index)."""
    recorded = tuple(existing["asset_ids"])
    return (res.source == rs.REST and existing["winning_asset_id"] == res.winning_asset_id
            and recorded != res.asset_ids and sorted(recorded) == sorted(res.asset_ids))


def _reordered(existing: Any, res: rs.Resolution) -> bytes:
    """The recorded payload with the tokens in ``res``'s order (used only while it is not appended yet)."""
    try:
        event = mpb.MarketResolution.FromString(bytes(existing["payload"]))
    except DecodeError:
        return bytes(existing["payload"])  # the sweep logs it and leaves it
    del event.asset_ids[:]
    event.asset_ids.extend(res.asset_ids)
    return event.SerializeToString()


class ResolutionRecorder:
    """Records resolutions exactly once and appends them to the durable log (see the module docstring)."""

    def __init__(self, pool: Any, log_: DurableLog, ticks: DurableLog, redis: Any, metrics: IngestMetrics, *,
                 sweep_s: float = SWEEP_S, clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.pool = pool
        self.log = log_
        self.ticks = ticks
        self.redis = redis
        self.metrics = metrics
        self.sweep_s = sweep_s
        self.clock_ms = clock_ms
        self._lock = asyncio.Lock()  # one appender: the live path and the sweep never append the same row twice
        self._wake = asyncio.Event()
        self.appended = 0

    async def record(self, res: rs.Resolution, *, infos: Iterable[MarketInfo] = ()) -> str:
        """EMITTED (new: published now, or by the sweep if publishing failed), DUPLICATE or CONTRADICTED.
        Raises when PostgreSQL fails (nothing recorded)."""
        event = res.to_proto(telemetry.new_traceparent())
        payload = event.SerializeToString()
        async with self._lock:
            async with self.pool.connection() as conn:
                cur = await conn.execute(_INSERT, (
                    res.condition_id, list(res.asset_ids), res.winning_asset_id, res.winning_outcome,
                    res.market_slug, res.neg_risk, res.source, res.confirmed,
                    _ts(res.venue_ms * 1_000_000) if res.venue_ms > 0 else None, _ts(res.received_ns), payload))
                inserted = await cur.fetchone() is not None
                existing = None if inserted else await (await conn.execute(_EXISTING, (res.condition_id,))).fetchone()
                if existing is not None and _misordered(existing, res):
                    await conn.execute(_REORDER, (list(res.asset_ids), _reordered(existing, res),
                                                  res.condition_id, res.winning_asset_id))
            if inserted:
                self.metrics.resolution(res.source, EMITTED)
                log.info("market resolved", extra={"condition_id": res.condition_id, "source": res.source,
                                                   "winning_asset_id": res.winning_asset_id,
                                                   "confirmed": res.confirmed})
                try:
                    await self._publish(event, payload, infos)
                except Exception as exc:  # noqa: BLE001 - recorded: the sweep publishes it
                    reraise_if_cancelling()
                    log.warning("resolution recorded, not yet appended; the sweep will",
                                extra={"condition_id": res.condition_id, "error": repr(exc)[:300]})
                    self._wake.set()
                return EMITTED
        assert existing is not None
        if existing["winning_asset_id"] == res.winning_asset_id:
            self.metrics.resolution(res.source, DUPLICATE)
            if res.source == rs.REST and tuple(existing["asset_ids"]) != res.asset_ids:
                # the socket path records the order CLOB REST lists (the outcome index), so only a row recorded
                # before it did gets here. The order matters: the executor builds a neg-risk redemption's amounts
                # (shares per outcome index) from it. The row (the same tokens), which the executor's settlement
                # sweep reads, was put right above; an event already appended is not rewritten
                self.metrics.resolution(res.source, ORDER_DIFFERS)
                log.warning("market resolution recorded with its tokens in another order than CLOB REST lists them",
                            extra={"condition_id": res.condition_id, "recorded": list(existing["asset_ids"]),
                                   "rest": list(res.asset_ids), "neg_risk": res.neg_risk,
                                   "corrected": _misordered(existing, res), "appended": not existing["unappended"]})
            return DUPLICATE
        self.metrics.resolution(res.source, rs.CONTRADICTED)
        log.error("contradicting market resolution ignored: the first one recorded stands",
                  extra={"condition_id": res.condition_id, "source": res.source,
                         "winning_asset_id": res.winning_asset_id, "recorded_winner": existing["winning_asset_id"],
                         "recorded_source": existing["source"]})
        # positions may have been settled and redeemed on the wrong side: only a person can tell which is true
        raise_alert(AlertKind.RESOLUTION_CONTRADICTED, f"resolution_contradicted:{res.condition_id}",
                    f"market {res.market_slug or res.condition_id}: {res.source} names {res.winning_asset_id} the "
                    f"winner, while {existing['source']} recorded {existing['winning_asset_id']}, which its positions "
                    "were settled on; check the market at the venue and correct its positions by hand if that was "
                    "wrong", severity=Severity.CRITICAL,
                    dedupe_id=f"resolution_contradicted:{res.condition_id}:{res.winning_asset_id}",
                    condition_id=res.condition_id, market_slug=res.market_slug, source=res.source,
                    recorded_winner=existing["winning_asset_id"], recorded_source=existing["source"],
                    other_winner=res.winning_asset_id)
        return rs.CONTRADICTED

    async def _publish(self, event: mpb.MarketResolution, payload: bytes, infos: Iterable[MarketInfo] = (),
                       logged_cursor: str | None = None) -> str:
        """Side effects, append (unless the log already has it at ``logged_cursor``), then the row's cursor."""
        cursor = logged_cursor
        if cursor is None:
            await close_markets(self.redis, event.condition_id, event.asset_ids, winner=event.winning_asset_id,
                                infos=infos, neg_risk=event.neg_risk, market_slug=event.market_slug,
                                now_ms=self.clock_ms())
            if event.source == mpb.RESOLUTION_SOURCE_CLOB_REST:
                await self.ticks.append_many(resolved_ticks(event))
            cursor = await self.log.append(payload)
            self.appended += 1
        async with self.pool.connection() as conn:
            await conn.execute(_APPENDED, (cursor, event.condition_id))
        return cursor

    async def sweep(self) -> int:
        """Publish every recorded resolution not appended yet; returns how many."""
        async with self._lock:
            async with self.pool.connection() as conn:
                rows = await (await conn.execute(_UNAPPENDED)).fetchall()
            if not rows:
                return 0
            logged = await self._logged()
            for row in rows:
                payload = bytes(row["payload"])
                try:
                    event = mpb.MarketResolution.FromString(payload)
                except DecodeError:
                    log.error("stored market resolution does not parse; left unappended",
                              extra={"condition_id": row["condition_id"]})
                    continue
                await self._publish(event, payload, logged_cursor=logged.get(event.condition_id))
                log.info("market resolution appended by the sweep",
                         extra={"condition_id": event.condition_id,
                                "source": _SOURCE_NAMES.get(event.source, str(event.source))})
            return len(rows)

    async def _logged(self) -> dict[str, str]:
        """Condition id → cursor of the markets among the log's newest entries."""
        out: dict[str, str] = {}
        entries: Any = await self.log.redis.xrevrange(self.log.name, count=LOG_SCAN)
        for entry_id, fields in entries:
            with contextlib.suppress(DecodeError):
                cid = mpb.MarketResolution.FromString(fields.get(b"p", b"")).condition_id
                out.setdefault(cid, entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
        return out

    async def run(self) -> None:
        """Sweep at start, then every ``sweep_s`` and whenever publishing failed, until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - storage trouble: next round
                reraise_if_cancelling()
                log.warning("resolution sweep failed", extra={"error": repr(exc)[:300]})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sweep_s):
                    await self._wake.wait()


class SocketResolutions:
    """The book socket's ``market_resolved`` frames: a clear winner is recorded at once, its tokens in outcome-index
    order by their cached market info (``outcome_index``, from the CLOB REST market); anything else, and a frame
    whose tokens' outcome indices are not all cached, waits for the CLOB REST market
    (:class:`~services.ingest.marketchecks.MarketChecks` is asked to check it at once, then with backoff). Frames
    about no watched asset are ignored and counted (UNWATCHED)."""

    def __init__(self, recorder: ResolutionRecorder, ask_rest: Callable[[str], None], watched: Any, redis: Any,
                 metrics: IngestMetrics, *, attempts: int = 12, retry_s: float = 1.0) -> None:
        self.recorder = recorder
        self.ask_rest = ask_rest  # check this market on REST soon (a socket source said it closed)
        self.watched = watched  # container of the asset ids the book feed follows
        self.redis = redis
        self.metrics = metrics
        self.attempts = attempts
        self.retry_s = retry_s
        self._queue: asyncio.Queue[tuple[clob.ResolvedMsg, int]] = asyncio.Queue()

    def on_resolved(self, msg: clob.ResolvedMsg, recv_ns: int) -> None:
        """A parsed ``market_resolved``, from inside the socket's read callback."""
        if not rs.is_watched(msg, self.watched):
            self.metrics.resolution(rs.SOCKET, rs.UNWATCHED)
            return
        self._queue.put_nowait((msg, recv_ns))

    async def run(self) -> None:
        """Handle frames in order until cancelled; storage trouble is retried (``attempts`` times, backing off)."""
        while True:
            msg, recv_ns = await self._queue.get()
            for attempt in range(self.attempts):
                try:
                    await self.handle(msg, recv_ns)
                    break
                except Exception as exc:  # noqa: BLE001 - PostgreSQL / Redis down: try again
                    reraise_if_cancelling()
                    last = attempt + 1 == self.attempts
                    (log.error if last else log.warning)(
                        "market_resolved not handled" + ("; left to the REST safety net" if last else "; retrying"),
                        extra={"condition_id": msg.market, "error": repr(exc)[:300]})
                    if not last:
                        await asyncio.sleep(min(30.0, self.retry_s * 2 ** attempt))

    async def handle(self, msg: clob.ResolvedMsg, recv_ns: int) -> str:
        """Apply one watched frame; returns its verdict (RESOLVED, NO_CLEAR_WINNER, NO_MARKET_INFO,
        NO_OUTCOME_ORDER, BAD_MARKET)."""
        infos = await self._cached_infos(msg)
        verdict = rs.socket_verdict(msg, infos)
        if verdict == rs.BAD_MARKET:
            self.metrics.resolution(rs.SOCKET, rs.BAD_MARKET)
            log.warning("market_resolved with an unusable market id ignored", extra={"market": msg.market[:100]})
            return verdict
        if verdict == rs.RESOLVED:
            if await self.recorder.record(rs.socket_resolution(msg, infos, recv_ns)) != EMITTED:
                return verdict  # the market's resolution was recorded before: nothing to ask
        else:
            self.metrics.resolution(rs.SOCKET, verdict)
            log.warning("market_resolved not applied until the CLOB REST market confirms it",
                        extra={"condition_id": msg.market, "reason": verdict,
                               "winning_asset_id": msg.winning_asset_id[:100]})
            await close_markets(self.redis, msg.market, [a for a in msg.asset_ids if a in self.watched])
        self.ask_rest(msg.market)  # confirms the winner, finds the one that was missing, or reports a contradiction
        return verdict

    async def _cached_infos(self, msg: clob.ResolvedMsg) -> dict[str, MarketInfo | None]:
        """The cached market info of every token the frame names (CLOB REST's market info gives each its outcome
        index); none when it names more than MAX_TOKENS."""
        if len(msg.asset_ids) > MAX_TOKENS:
            return {}
        return {a: await read_market(self.redis, a) for a in dict.fromkeys(msg.asset_ids)}
