"""PostgreSQL persistence off the hot path.

Leader trades: a background consumer of the durable leader-trade log (cursor ``tt:cursor:ingest-pg``)
inserts batches with ``ON CONFLICT (id) DO NOTHING`` and saves its cursor after each commit, so a
crash repeats at most one batch (harmlessly) and loses nothing. Non-trade activity rows (REDEEM,
MERGE...) are inserted directly by the poller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from psycopg_pool import AsyncConnectionPool

from common.cancel import reraise_if_cancelling
from common.consumer import RedisCursorStore
from common.decimals import fmt
from common.logtrim import wall_ms
from common.retry import Backoff
from common.streams import START_OLDEST, DurableLog
from common.text import storable
from services.ingest.identity import Identified
from tradingtools.common.v1 import common_pb2
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)
CONSUMER = "ingest-pg"
_RETRY = Backoff(0.1, 5.0)

# One statement per chunk: the rows travel as one JSON document (orjson-encoded), so a batch costs the
# event loop a few microseconds per row instead of a parameter round of psycopg per row.
_INSERT_TRADES = """
INSERT INTO leader_trades (id, tx_hash, wallet, asset_id, condition_id, side, price, size, notional_usd, fee,
  outcome, outcome_index, market_slug, event_slug, title, activity_type, source, occurrence, venue_time,
  received_time_ns, stream_cursor)
SELECT t.id, t.tx_hash, t.wallet, t.asset_id, t.condition_id, t.side, t.price, t.size, t.notional_usd,
  nullif(t.fee, '')::numeric, t.outcome, t.outcome_index, t.market_slug, t.event_slug, t.title, t.activity_type,
  t.source, t.occurrence, to_timestamp(t.venue_time_ms / 1000.0), t.received_time_ns, t.stream_cursor
FROM json_to_recordset(%s::json) AS t(id text, tx_hash text, wallet text, asset_id text, condition_id text,
  side text, price numeric, size numeric, notional_usd numeric, fee text, outcome text, outcome_index integer,
  market_slug text, event_slug text, title text, activity_type text, source text, occurrence integer,
  venue_time_ms bigint, received_time_ns bigint, stream_cursor text)
ON CONFLICT (id) DO NOTHING
"""
CHUNK = 100

_INSERT_ACTIVITY = """
INSERT INTO leader_activity (id, activity_type, tx_hash, wallet, asset_id, condition_id, side, price, size,
  usdc_size, outcome, outcome_index, market_slug, event_slug, title, occurrence, venue_time, received_time_ns)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


_SIDES = {v: k.removeprefix("SIDE_") for k, v in common_pb2.Side.items()}
_TYPES = {v: k.removeprefix("ACTIVITY_TYPE_") for k, v in mpb.ActivityType.items()}
_SOURCES = {v: k.removeprefix("FEED_SOURCE_") for k, v in mpb.FeedSource.items()}


def trade_row(cursor: str, e: mpb.LeaderTradeEvent) -> dict[str, Any]:
    """Column values of one leader trade (decimals stay the event's decimal strings)."""
    return {"id": e.id, "tx_hash": e.tx_hash, "wallet": e.wallet, "asset_id": e.asset_id,
            "condition_id": e.condition_id, "side": _SIDES.get(e.side, ""), "price": e.price, "size": e.size,
            "notional_usd": e.notional_usd, "fee": e.fee, "outcome": storable(e.outcome),
            "outcome_index": e.outcome_index, "market_slug": storable(e.market_slug),
            "event_slug": storable(e.event_slug), "title": storable(e.title),
            "activity_type": _TYPES.get(e.activity_type, ""), "source": _SOURCES.get(e.source, ""),
            "occurrence": e.occurrence, "venue_time_ms": e.venue_time_ms, "received_time_ns": e.received_time_ns,
            "stream_cursor": cursor}


class TradeWriter:
    """Copies the leader-trade log into ``leader_trades`` in batches."""

    def __init__(self, log_: DurableLog, pool: AsyncConnectionPool, cursors: RedisCursorStore, *,
                 batch: int = 500, linger_s: float = 0.2, backoff: Backoff = _RETRY) -> None:
        self.log = log_
        self.pool = pool
        self.cursors = cursors
        self.batch = batch
        self.linger_s = linger_s
        self.backoff = backoff
        self.written = 0
        self.cursor = ""

    async def step(self, block_ms: int = 1000) -> int:
        """Write the next batch (waiting up to ``block_ms`` for one); returns rows handled."""
        if not self.cursor:  # registered first: the log is kept for what this reader has not written yet
            await self.cursors.register(CONSUMER, self.log.name, wall_ms())
            self.cursor = await self.cursors.get(CONSUMER) or await self.log.resolve(START_OLDEST)
        entries = await self.log.read(self.cursor, count=self.batch, block_ms=block_ms)
        if not entries:
            return 0
        for start in range(0, len(entries), CHUNK):
            rows = []
            for cursor, payload in entries[start:start + CHUNK]:
                try:
                    rows.append(trade_row(cursor, mpb.LeaderTradeEvent.FromString(payload)))
                except DecodeError:
                    log.error("undecodable leader trade in log", extra={"cursor": cursor})
            if rows:
                async with self.pool.connection() as conn:
                    await conn.execute(_INSERT_TRADES, (orjson.dumps(rows).decode(),))
            await asyncio.sleep(0)  # let the feeds run between chunks
        self.cursor = entries[-1][0]
        await self.cursors.set(CONSUMER, self.cursor)
        self.written += len(rows)
        return len(entries)

    async def run(self) -> None:
        """Run until cancelled; database or Redis failures are retried from the saved cursor."""
        rng = random.Random()
        attempt = 0
        while True:
            try:
                if await self.step() < self.batch:
                    await asyncio.sleep(self.linger_s)  # let rows accumulate: fewer, larger inserts
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retry from the last saved cursor
                reraise_if_cancelling()
                self.cursor = ""
                delay = self.backoff.delay(min(attempt, 8), rng.random())
                attempt += 1
                log.warning("leader trade persistence failed", extra={"error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)


class PgActivityStore:
    """Records non-trade activity rows in ``leader_activity``."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def record(self, items: list[Identified]) -> None:
        """Insert rows (idempotent on id)."""
        if not items:
            return
        rows = []
        for item in items:
            f = item.fill
            rows.append((item.id, f.activity_type, f.tx_hash, f.wallet, f.asset_id, f.condition_id, f.side,
                         fmt(f.price), fmt(f.size), fmt(f.usdc_size) if f.usdc_size is not None else None,
                         f.outcome, f.outcome_index, f.market_slug, f.event_slug, f.title, item.occurrence,
                         _ts(f.venue_time_ms), f.received_ns))
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(_INSERT_ACTIVITY, rows)

