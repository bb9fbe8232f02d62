"""The REST safety net for resolutions: every held market checked on the CLOB REST API on a durable schedule.

Markets checked = every market the engine holds a position in (``positions`` OPEN with shares, synced every
``sync_s``: the condition id a position is booked under, lower-cased, or for a token held under no market id, the
market ingest cached for the token, or found for it before; while such a token's market is unknown no market is
dropped) plus every market a socket ``market_resolved`` asked about (its row is
``closed``: kept until REST settles it, held or not). The schedule lives in ``market_checks`` (``next_check_at``,
``end_date``, ``failures`` / ``last_error``); :func:`services.ingest.resolution.next_check_s` decides each next
check (at least every ``interval_s``, ``GRACE_AFTER_END_S`` after the end date, backoff on failures). Requests go
through one token bucket (``TT_TUNE_INGEST_MARKET_CHECK_RATE_PER_S``), one at a time, due rows first: spread over
time.

An answer that resolves the market is recorded (:class:`~services.ingest.resolutions.ResolutionRecorder`) and its
row deleted; a malformed or failed answer changes nothing but the schedule (logged, counted). Everything runs
in one task, so a socket's ask and a check of the same market never race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from common.alerts import AlertKind, raise_alert
from common.cancel import reraise_if_cancelling
from common.clob_rest import ClobRest
from common.decimals import fmt
from common.marketstate import market_key
from common.restget import HttpStatusError, RateLimited, RequestFailed
from common.retry import Backoff
from services.ingest import resolution as rs
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError
from services.ingest.resolutions import ResolutionRecorder, close_markets

log = logging.getLogger(__name__)
SYNC_S = 60.0
BATCH = 20
UNCLEAR_ALERT_S = 6 * 3600.0  # closed without a clear winner this long: one RESOLUTION_UNCLEAR alert

# The condition ids the positions held are booked under, as stored: one probe of index positions_condition per
# distinct id (the next one after the last found), not a pass over every open position. With 100,000 positions over
# 5,500 markets the DISTINCT over the table took 0.47 s of PostgreSQL CPU a minute (a burst every other service on
# the host waited behind), this 40 ms. An id is the market's once lower-cased when it has the venue's form
# (positions booked before intake lower-cased them kept the trading terminal's case); '' and other forms name no
# market: their tokens are looked up (_HELD_UNNAMED).
_HELD = """
WITH RECURSIVE held(condition_id) AS (
  (SELECT p.condition_id FROM positions p WHERE p.state = 'OPEN' AND p.size > 0 ORDER BY p.condition_id LIMIT 1)
  UNION ALL
  SELECT (SELECT p.condition_id FROM positions p
           WHERE p.state = 'OPEN' AND p.size > 0 AND p.condition_id > h.condition_id
           ORDER BY p.condition_id LIMIT 1)
    FROM held h WHERE h.condition_id IS NOT NULL
)
SELECT condition_id FROM held WHERE condition_id IS NOT NULL
"""
# The tokens held under ids that name no market (index positions_condition: few ids, few positions)
_HELD_UNNAMED = """
SELECT DISTINCT asset_id FROM positions WHERE state = 'OPEN' AND size > 0 AND condition_id = ANY(%s)
"""
# The markets on the schedule because they are held (a socket's ask keeps its row ``closed`` until REST settles it)
_LISTED = "SELECT condition_id FROM market_checks WHERE NOT closed"
_SYNC = """
INSERT INTO market_checks (condition_id, next_check_at)
SELECT h.condition_id, %s FROM unnest(%s::text[]) AS h(condition_id)
 WHERE NOT EXISTS (SELECT 1 FROM market_resolutions r WHERE r.condition_id = h.condition_id)
ON CONFLICT (condition_id) DO NOTHING
"""
_PRUNE = "DELETE FROM market_checks WHERE NOT closed AND condition_id = ANY(%s)"
LOOKUP_CHUNK = 500  # token market lookups per pipelined Redis round trip
_ASK = """
INSERT INTO market_checks (condition_id, closed, next_check_at) VALUES (%s, true, %s)
ON CONFLICT (condition_id) DO UPDATE SET
  next_check_at = least(market_checks.next_check_at, excluded.next_check_at), closed = true,
  failures = CASE WHEN market_checks.closed THEN market_checks.failures ELSE 0 END
"""
_DUE = """
SELECT condition_id, end_date, closed, failures FROM market_checks
 WHERE next_check_at <= %s ORDER BY next_check_at LIMIT %s
"""
_SOONEST = "SELECT min(next_check_at) AS at FROM market_checks"
_UPDATE = """
UPDATE market_checks SET market_slug = coalesce(%s, market_slug), end_date = coalesce(%s, end_date),
  closed = closed OR %s, checked_at = %s, next_check_at = %s, failures = %s, last_error = %s,
  unclear_since = CASE %s WHEN 'SET' THEN coalesce(unclear_since, %s) WHEN 'KEEP' THEN unclear_since END
 WHERE condition_id = %s
RETURNING market_slug, unclear_since, unclear_alerted_at
"""
# what an operator needs to settle a market by hand: the positions still open there
_HELD_THERE = """
SELECT count(*) AS positions, count(DISTINCT follower_wallet_id) AS wallets, coalesce(sum(cost_usd), 0) AS cost_usd
  FROM positions WHERE condition_id = %s AND state = 'OPEN' AND size > 0
"""
_ALERTED = "UPDATE market_checks SET unclear_alerted_at = %s WHERE condition_id = %s"
_DONE = "DELETE FROM market_checks WHERE condition_id = %s"


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class MarketChecks:
    """Checks held markets on CLOB REST ``/markets/{condition_id}``; :meth:`run` until cancelled."""

    def __init__(self, pool: Any, rest: ClobRest, recorder: ResolutionRecorder, redis: Any, metrics: IngestMetrics,
                 *, interval_s: float = 3600.0, sync_s: float = SYNC_S, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, awaiting: Backoff = rs.AWAITING_WINNER,
                 failing: Backoff = rs.FAILING, unclear_alert_s: float = UNCLEAR_ALERT_S) -> None:
        self.pool = pool
        self.rest = rest
        self.recorder = recorder
        self.redis = redis
        self.metrics = metrics
        self.interval_s = interval_s
        self.sync_s = sync_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.awaiting = awaiting
        self.failing = failing
        self.unclear_alert_s = unclear_alert_s
        self._asked: dict[str, None] = {}
        # token held under no market id → the market last found for it in tt:market: the entry may be gone or written
        # again without it later, the token's market is the same
        self._token_markets: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._next_sync = 0.0
        self.checks = 0

    def ask(self, condition_id: str) -> None:
        """Check this market on REST at once, then with backoff until it settles (a socket said it closed)."""
        self._asked[condition_id] = None
        self._wake.set()

    def refresh(self) -> None:
        """Read the held markets again now (instead of within ``sync_s``)."""
        self._next_sync = 0.0
        self._wake.set()

    async def run(self) -> None:
        """Sync held markets, take asks, check what is due; sleep until the next due check or an ask."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self._take_asks()
                if self.clock() >= self._next_sync:
                    self._next_sync = self.clock() + self.sync_s  # before: a refresh() meanwhile syncs again
                    await self.sync_held()
                if await self.check_due():
                    continue
                wait = min(await self._until_due(), self._next_sync - self.clock())
                failures = 0
            except Exception as exc:  # noqa: BLE001 - storage trouble: try again later
                reraise_if_cancelling()
                failures += 1
                self._next_sync = 0.0
                wait = min(60.0, 0.5 * 2 ** min(failures, 7))
                log.warning("market checks: storage failed", extra={"error": repr(exc)[:300], "retry_s": wait})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.05)):
                    await self._wake.wait()

    async def _take_asks(self) -> None:
        asked, self._asked = list(self._asked), {}
        if not asked:
            return
        try:
            async with self.pool.connection() as conn:
                for condition_id in asked:
                    await conn.execute(_ASK, (condition_id, _dt(self.clock())))
        except BaseException:
            for condition_id in asked:
                self._asked.setdefault(condition_id, None)
            raise

    async def sync_held(self) -> None:
        """Schedule a first check of newly held markets; drop markets no longer held (unless a socket asked).

        The markets held are those the positions are booked under (lower-cased), and for the tokens held under an
        id that names no market ('': an EXTERNAL position whose venue id was not trusted, a copy of a leader trade
        that came without one), the market ingest cached for the token (``tt:market:{asset}``, one pipelined read
        of those tokens alone), or else the one found for it before (kept in memory: the executor deletes the entry
        when an order answers MARKET_CLOSED, and ingest fetches a market's info once per process). A token whose
        market is known neither way (not cached yet: ingest fetches it once its book names it) is logged and
        counted, and looked up again next time; until every such token's market is known, and while a lookup
        fails, nothing is dropped: any market on the schedule may be that token's."""
        async with self.pool.connection() as conn:
            stored = [r["condition_id"] for r in await (await conn.execute(_HELD)).fetchall()]
            held = {c for s in stored if (c := market_id(s))}
            unnamed = [s for s in stored if not market_id(s)]
            assets = [r["asset_id"] for r in await (await conn.execute(_HELD_UNNAMED, (unnamed,))).fetchall()
                      ] if unnamed and self.redis is not None else []
        found, complete = await self._markets_of(sorted(assets))
        held.update(found)
        async with self.pool.connection() as conn, conn.transaction():
            listed = {r["condition_id"] for r in await (await conn.execute(_LISTED)).fetchall()}
            new, gone = sorted(held - listed), sorted(listed - held)
            if new:
                await conn.execute(_SYNC, (_dt(self.clock()), new))
            if gone and complete:
                await conn.execute(_PRUNE, (gone,))

    async def _markets_of(self, assets: list[str]) -> tuple[set[str], bool]:
        """The markets of ``assets``: cached by ingest (``tt:market:{asset}`` ``condition_id``), else found for them
        before; and whether every token's market is known (else no market may be dropped)."""
        known = self._token_markets
        if not assets:
            known.clear()
            return set(), True
        names: list[Any] = []
        try:
            for i in range(0, len(assets), LOOKUP_CHUNK):
                pipe = self.redis.pipeline(transaction=False)
                for asset_id in assets[i:i + LOOKUP_CHUNK]:
                    pipe.hget(market_key(asset_id), "condition_id")
                names.extend(await pipe.execute())
        except Exception as exc:  # noqa: BLE001 - Redis trouble: these markets wait for the next sync
            reraise_if_cancelling()
            self.metrics.held_token_lookup("FAILED", len(assets))
            log.warning("held tokens' markets not read: only those found before are scheduled this time, none is "
                        "dropped", extra={"tokens": len(assets), "error": repr(exc)[:300]})
            return {known[a] for a in assets if a in known}, False
        found: set[str] = set()
        unknown: list[str] = []
        for asset_id, raw in zip(assets, names, strict=True):
            cid = market_id(raw.decode() if isinstance(raw, bytes) else raw or "") or known.get(asset_id, "")
            if cid:
                found.add(cid)
                known[asset_id] = cid
            else:
                unknown.append(asset_id)
        if len(known) > len(assets) - len(unknown):  # tokens held under no id no longer: forgotten
            held = set(assets)
            for asset_id in [a for a in known if a not in held]:
                del known[asset_id]
        self.metrics.held_token_lookup("FOUND", len(assets) - len(unknown))
        if unknown:
            self.metrics.held_token_lookup("NO_MARKET_INFO", len(unknown))
            log.warning("tokens held under no market id and without a cached market: their market is not checked "
                        "on REST until ingest caches it, and no market is dropped from the schedule meanwhile",
                        extra={"tokens": len(unknown), "asset_ids": unknown[:20]})
        return found, not unknown

    async def _until_due(self) -> float:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_SOONEST)).fetchone()
        at = row["at"] if row else None
        return self.sync_s if at is None else at.timestamp() - self.clock()

    async def check_due(self) -> int:
        """Check the rows that are due (up to a batch; an ask in between ends it early); returns how many."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_DUE, (_dt(self.clock()), BATCH))).fetchall()
        done = 0
        for row in rows:
            await self.check(row["condition_id"], end=row["end_date"], closed=row["closed"],
                             failures=row["failures"])
            done += 1
            if self._asked:
                break
        return done

    async def check(self, condition_id: str, *, end: datetime | None = None, closed: bool = False,
                    failures: int = 0) -> str:
        """One REST check of one market; returns its outcome (RESOLVED, OPEN, NO_CLEAR_WINNER, CONTRADICTED,
        MALFORMED, FAILED)."""
        self.checks += 1
        error, slug, end_s = "", None, end.timestamp() if end is not None else None
        try:
            page = await self.rest.market(condition_id)
            verdict = rs.rest_verdict(page.body, condition_id, int(self.clock() * 1000), page.received_ns)
        except ParseError as exc:
            outcome, error = rs.MALFORMED, f"{exc.kind}: {exc}"
        except (RateLimited, HttpStatusError, RequestFailed) as exc:
            outcome, error = rs.FAILED, repr(exc)
        else:
            outcome = verdict.verdict
            slug = verdict.infos[0].market_slug if verdict.infos else None
            end_s = verdict.end_ms / 1000 if verdict.end_ms is not None else end_s
            closed = closed or outcome != rs.OPEN
            if verdict.resolution is not None:
                recorded = await self.recorder.record(verdict.resolution, infos=verdict.infos)
                if recorded != rs.CONTRADICTED:
                    async with self.pool.connection() as conn:
                        await conn.execute(_DONE, (condition_id,))
                    self.metrics.market_check(rs.RESOLVED)
                    return rs.RESOLVED
                outcome, error = rs.CONTRADICTED, f"CONTRADICTS_RECORDED_RESOLUTION: REST winner {verdict.winners[0]}"
            elif outcome == rs.NO_CLEAR_WINNER:
                error = f"{rs.NO_CLEAR_WINNER}: {len(verdict.winners)} winners"
                self.metrics.resolution(rs.REST, rs.NO_CLEAR_WINNER)
                log.warning("market closed without a clear winner: not applied, checked again later",
                            extra={"condition_id": condition_id, "winners": list(verdict.winners)})
                await close_markets(self.redis, condition_id, [i.asset_id for i in verdict.infos],
                                    infos=verdict.infos)
            elif closed:
                error = "AWAITING_REST_CLOSED"  # a socket said it resolved; REST lags
        if outcome in (rs.MALFORMED, rs.FAILED):
            log.warning("market check failed; nothing changed", extra={"condition_id": condition_id,
                                                                       "outcome": outcome, "error": error[:300]})
        now = self.clock()
        nxt, count = rs.next_check_s(outcome, now_s=now, end_s=end_s, closed=closed, failures=failures,
                                     interval_s=self.interval_s, rand=self.rng.random(), awaiting=self.awaiting,
                                     failing=self.failing)
        unclear = outcome == rs.NO_CLEAR_WINNER
        # since when the market has been closed without a winner: a failed check does not restart the clock
        since = "SET" if unclear else "CLEAR" if outcome == rs.OPEN else "KEEP"
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_UPDATE, (
                slug, _dt(end_s) if end_s is not None else None, closed, _dt(now), _dt(nxt), count, error[:500],
                since, _dt(now), condition_id))).fetchone()
            if unclear and row is not None:
                await self._maybe_alert(conn, condition_id, row, now)
        self.metrics.market_check(outcome)
        return outcome

    async def _maybe_alert(self, conn: Any, condition_id: str, row: Any, now: float) -> None:
        """One RESOLUTION_UNCLEAR alert once a market has been closed without a clear winner ``unclear_alert_s``:
        its positions stay open (a 50/50 or voided result is not settled automatically) until a person acts."""
        since = row["unclear_since"]
        if row["unclear_alerted_at"] is not None or since is None or now - since.timestamp() < self.unclear_alert_s:
            return
        held = await (await conn.execute(_HELD_THERE, (condition_id,))).fetchone()
        hours = (now - since.timestamp()) / 3600
        raise_alert(AlertKind.RESOLUTION_UNCLEAR, f"resolution_unclear:{condition_id}",
                    f"market {row['market_slug'] or condition_id} closed {hours:.1f} h ago without a clear winner "
                    f"(a 50/50 or voided result, or a dispute): {held['positions']} open positions of "
                    f"{held['wallets']} wallets (cost ${fmt(held['cost_usd'])}) are not settled until it has one; "
                    "a result with no single winner has to be settled by hand",
                    dedupe_id=f"resolution_unclear:{condition_id}", condition_id=condition_id,
                    market_slug=row["market_slug"], positions=held["positions"], wallets=held["wallets"],
                    cost_usd=fmt(held["cost_usd"]), unclear_since=since.isoformat())
        await conn.execute(_ALERTED, (_dt(now), condition_id))
        self.metrics.resolution_unclear()


def market_id(raw: str) -> str:
    """``raw`` lower-cased when it is a condition id of the venue's form (0x + 64 hex digits), else ""."""
    cid = raw.lower()
    return cid if rs.valid_condition(cid) else ""
