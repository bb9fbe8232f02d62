"""Market info (tick size, minimum order size, neg-risk, closed/accepting, taker fee) from the CLOB REST API,
cached in Redis (``common.marketstate``: ``tt:market:{asset}``, which ingest also updates on
``tick_size_change``).

Cache policy: a cached entry younger than the TTL is used as is; an older one is used and refreshed
in the background; a missing one is fetched before routing, and so is one a leader trade contradicts (the market
accepts no orders though it is not closed, or the trade's price is outside [tick, 1 - tick]) once it is a couple
of seconds old. A ``/markets`` answer that does not list the asset (the trade named another market) is not taken
for the asset's. To force a refresh (e.g. the executor got INVALID_ORDER_MIN_TICK_SIZE), drop its rules
(``common.marketstate.drop_market_rules``): an entry without a tick size or without a minimum order size (a
``tick_size_change`` written after the rules were dropped brings the tick back alone) is fetched again before
routing (a closed one is not).

Books: every ``/book`` answer is also stored as ``tt:book:{asset}`` unless Redis holds a newer book
(``clob_book.BookStore``), so the executor has a book for the first copy in an asset ingest is not
watching yet. When the market info is cached but the asset has no stored book, the book alone is
fetched before routing; assets with a book pay nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp

from common.clob_rest import ClobRest, market_infos, parse_book, parse_market
from common.fields import ParseError
from common.marketrest import write_rest_market
from common.marketstate import BookSnapshot, MarketInfo, read_market
from common.restget import HttpStatusError, Page, RateLimited, RequestFailed, RestGetter
from services.router.adapters.clob_book import BookStore, book_snapshot
from services.router.metrics import MarketFeeMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")


def parse_market_info(asset_id: str, market: dict[str, Any] | None, book: dict[str, Any] | None,
                      now_ms: int) -> list[MarketInfo]:
    """MarketInfo for the asset (and its sibling tokens) from ``GET /markets/{condition}`` and/or
    ``GET /book?token_id=`` bodies (:func:`common.clob_rest.market_infos`: the book's tick and minimum win).
    A body that does not parse is left out. Raises ValueError when neither gives a tick size."""
    return market_infos(now_ms, market=_parsed(parse_market, market, asset_id),
                        book=_parsed(parse_book, book, asset_id), asset_id=asset_id)


def _parsed(parse: Callable[[dict[str, Any]], T], body: dict[str, Any] | None, asset_id: str) -> T | None:
    if body is None:
        return None
    try:
        return parse(body)
    except ParseError as exc:
        log.warning("clob body unusable", extra={"asset_id": asset_id, "error": str(exc)[:200]})
        return None


class ClobMarketInfo:
    """Market info and books from the CLOB REST API (:class:`common.clob_rest.ClobRest`)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, timeout_s: float,
                 fee_metrics: MarketFeeMetrics | None = None) -> None:
        self.rest = ClobRest(RestGetter(session, feed="clob_rest", timeout_s=timeout_s), base_url)
        self.fee_metrics = fee_metrics or MarketFeeMetrics()  # exported from here on, 0 included

    async def _get(self, what: str, request: Awaitable[Page]) -> dict[str, Any] | None:
        try:
            page = await request
        except (RateLimited, HttpStatusError) as exc:
            log.warning("clob market info request failed", extra={"path": what, "status": _status(exc)})
            return None
        except (RequestFailed, ParseError) as exc:
            log.warning("clob market info request failed", extra={"path": what, "error": repr(exc)[:200]})
            return None
        return page.body if isinstance(page.body, dict) else None

    async def fetch(self, asset_id: str, condition_id: str, now_ms: int, *, attempts: int = 2) -> list[MarketInfo]:
        """Market info of the asset's market; [] when the CLOB does not answer usefully (after ``attempts``)."""
        return (await self.fetch_with_book(asset_id, condition_id, now_ms, attempts=attempts))[0]

    async def fetch_with_book(self, asset_id: str, condition_id: str, now_ms: int, *,
                              attempts: int = 2) -> tuple[list[MarketInfo], BookSnapshot | None]:
        """Market info of the asset's market and the asset's book (None when ``/book`` gave none usable)."""
        for attempt in range(attempts):
            infos, book = await self._fetch_once(asset_id, condition_id, now_ms)
            if infos or attempt + 1 == attempts:
                return infos, book
            await asyncio.sleep(0.05 * (attempt + 1))
        return [], None

    async def fetch_book(self, asset_id: str, now_ms: int, *, fallback_tick: Decimal | None) -> BookSnapshot | None:
        """The asset's book alone (one attempt: the caller already has market info to route with)."""
        body = await self._get("/book", self.rest.book(asset_id))
        return book_snapshot(asset_id, _parsed(parse_book, body, asset_id), fallback_tick=fallback_tick,
                             now_ms=now_ms)

    async def _fetch_once(self, asset_id: str, condition_id: str,
                          now_ms: int) -> tuple[list[MarketInfo], BookSnapshot | None]:
        market_req = self._get(f"/markets/{condition_id}", self.rest.market(condition_id)) if condition_id else None
        book_req = self._get("/book", self.rest.book(asset_id))
        if market_req is not None:
            market_body, book_body = await asyncio.gather(market_req, book_req)
        else:
            market_body, book_body = None, await book_req
        if market_body is None and book_body is None:
            return [], None
        market, book = _parsed(parse_market, market_body, asset_id), _parsed(parse_book, book_body, asset_id)
        if market is not None and market.fee_problem:  # routed on with the fee that is usable, if any
            self.fee_metrics.fee_unusable()
            log.warning("clob market fee unusable", extra={"asset_id": asset_id, "condition_id": condition_id,
                                                            "error": market.fee_problem[:200]})
        if market is not None and market.tokens and all(t.token_id != asset_id for t in market.tokens):
            # another market's answer (the trade named the wrong one): its state is not the asset's
            log.warning("clob market does not list the asset", extra={"asset_id": asset_id,
                                                                       "condition_id": condition_id})
            market = None
        try:
            infos = market_infos(now_ms, market=market, book=book, asset_id=asset_id)
        except ValueError as exc:
            log.warning("clob market info unusable", extra={"asset_id": asset_id, "error": str(exc)})
            return [], None
        tick = next((i.tick_size for i in infos if i.asset_id == asset_id), None)
        return infos, book_snapshot(asset_id, book, fallback_tick=tick, now_ms=now_ms)


def _status(exc: RateLimited | HttpStatusError) -> int:
    return exc.status if isinstance(exc, HttpStatusError) else 429


class MarketInfoCache:
    """Resolves an asset's market info: Redis cache first, CLOB REST when missing or old."""

    def __init__(self, redis: Any, clob: ClobMarketInfo, *, ttl_ms: int, clock_ms: Callable[[], int],
                 book_retry_ms: int = 5_000, recheck_ms: int = 2_000) -> None:
        self.redis = redis
        self.clob = clob
        self.ttl_ms = ttl_ms
        self.clock_ms = clock_ms
        self.book_retry_ms = book_retry_ms
        self.recheck_ms = recheck_ms
        # asset → when an entry the trade contradicted was last read again (a failed read is not repeated per trade)
        self._rechecked_ms: dict[str, int] = {}
        self.books = BookStore(redis)
        self._inflight: dict[str, asyncio.Task[MarketInfo | None]] = {}
        self._book_inflight: dict[str, asyncio.Task[None]] = {}
        # asset → when its book-only fetch last failed: not asked again (per trade) for book_retry_ms
        self._book_failed_ms: dict[str, int] = {}

    def _usable(self, cached: MarketInfo | None) -> bool:
        return cached is not None and cached.tick_size > 0

    async def resolve(self, asset_id: str, condition_id: str, cached: MarketInfo | None, *,
                      has_book: bool = True, price: Decimal | None = None) -> MarketInfo | None:
        """Market info to route with, or None when unknown and the CLOB does not answer. Before it
        returns, the asset's book is stored when Redis had none (``has_book`` False) and the CLOB gave one.
        ``price``: the leader's trade price; one outside the cached [tick, 1 - tick] says the tick changed since."""
        if cached is not None and self._usable(cached):
            if self._contradicted(cached, price) and self._recheck_due(cached):
                fresh = await asyncio.shield(self._refresh(asset_id, condition_id, cached))
                return fresh if fresh is not None else cached
            if self.clock_ms() - cached.updated_ms > self.ttl_ms:
                self._refresh(asset_id, condition_id, cached)
            if not has_book and not self._book_recently_failed(asset_id):
                await asyncio.shield(self._book_only(asset_id, cached.tick_size))
            return cached
        return await asyncio.shield(self._refresh(asset_id, condition_id, cached))

    @staticmethod
    def _contradicted(cached: MarketInfo, price: Decimal | None) -> bool:
        """The entry says what a leader trade shows is no longer so: the market accepts no orders though it is not
        closed (not open yet, or paused: routed so, every copy is skipped until the TTL), or the trade's price is
        outside [tick, 1 - tick] (the venue made the tick finer near 0 or 1). A price off the grid inside those
        bounds says nothing: the venue reports averaged prices (0.709999959)."""
        if cached.closed:
            return False
        if not cached.accepting_orders:
            return True
        tick = cached.tick_size
        return price is not None and 0 < price < 1 and not tick <= price <= 1 - tick

    def _recheck_due(self, cached: MarketInfo) -> bool:
        """True (and remembered) when the entry and its last re-read are both older than ``recheck_ms``."""
        now = self.clock_ms()
        last = max(cached.updated_ms, self._rechecked_ms.get(cached.asset_id, 0))
        if now - last <= self.recheck_ms:
            return False
        if len(self._rechecked_ms) > 10_000:
            self._rechecked_ms.clear()
        self._rechecked_ms[cached.asset_id] = now
        return True

    def _book_recently_failed(self, asset_id: str) -> bool:
        failed = self._book_failed_ms.get(asset_id)
        if failed is None:
            return False
        if self.clock_ms() - failed < self.book_retry_ms:
            return True
        del self._book_failed_ms[asset_id]
        return False

    def _book_only(self, asset_id: str, tick: Decimal) -> asyncio.Task[None]:
        refresh = self._inflight.get(asset_id)
        task = self._book_inflight.get(asset_id)
        if task is None:
            task = asyncio.create_task(self._fetch_book(asset_id, tick, refresh))
            self._book_inflight[asset_id] = task
            task.add_done_callback(lambda _t: self._book_inflight.pop(asset_id, None))
        return task

    async def _fetch_book(self, asset_id: str, tick: Decimal,
                          refresh: asyncio.Task[MarketInfo | None] | None) -> None:
        if refresh is not None:
            await refresh  # a market refresh in flight fetches (and stores) the book too
            return
        book = await self.clob.fetch_book(asset_id, self.clock_ms(), fallback_tick=tick)
        if book is None:
            if len(self._book_failed_ms) > 10_000:
                self._book_failed_ms.clear()
            self._book_failed_ms[asset_id] = self.clock_ms()
            return
        self._book_failed_ms.pop(asset_id, None)
        await self._store_book(book)

    async def _store_book(self, book: BookSnapshot | None) -> None:
        if book is None:
            return
        try:
            await self.books.store_if_newer(book)
        except Exception:  # noqa: BLE001 - the executor copes without it (NO_BOOK / no depth check)
            log.warning("book cache write failed", extra={"asset_id": book.asset_id})

    def _refresh(self, asset_id: str, condition_id: str,
                 cached: MarketInfo | None) -> asyncio.Task[MarketInfo | None]:
        task = self._inflight.get(asset_id)
        if task is None:
            task = asyncio.create_task(self._fetch(asset_id, condition_id or (cached.condition_id if cached else ""),
                                                   cached.event_slug if cached else ""))
            self._inflight[asset_id] = task
            task.add_done_callback(lambda _t: self._inflight.pop(asset_id, None))
        return task

    async def _fetch(self, asset_id: str, condition_id: str, event_slug: str) -> MarketInfo | None:
        """Fetch the market's info and store it without undoing what ingest wrote meanwhile (a close, a
        ``tick_size_change``: :func:`write_rest_market`); the asset's info as stored then, else as fetched."""
        asked_ms = self.clock_ms()
        infos, book = await self.clob.fetch_with_book(asset_id, condition_id, asked_ms)
        await self._store_book(book)
        mine = None
        for info in infos:
            if event_slug and not info.event_slug:
                info = replace(info, event_slug=event_slug)  # the CLOB does not know event slugs
            stored: MarketInfo | None = None
            try:
                await write_rest_market(self.redis, info, asked_ms)
                if info.asset_id == asset_id:
                    stored = await read_market(self.redis, asset_id)
            except Exception:  # noqa: BLE001 - the cache is an optimisation; routing goes on
                log.warning("market info cache write failed", extra={"asset_id": info.asset_id})
            if info.asset_id == asset_id:
                mine = stored if stored is not None and stored.tick_size > 0 else info
        return mine
