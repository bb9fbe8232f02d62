"""GET /subscriptions/{id}/positions and GET /positions?wallet=…: a follower's positions through their
whole life (current lives and ended ones), newest first, with marks and PnL.

The lives come from PostgreSQL (``position_repo``); marks and, when PostgreSQL has none, market slugs
come from what ingest keeps in Redis (``tt:book:{asset}``, ``tt:market:{asset}``), read for the page in
one pipelined round trip. Redis unreachable or a malformed book: the page is still served, without
the marks it could not read (``mark`` "", ``unrealizedPnlUsd`` "0") — positions are PostgreSQL's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from common.marketstate import book_key, mark_from_json, market_key
from services.control import pagination, position_repo
from services.control import validation as v
from services.control.codec import Row, short
from services.control.db import Database
from services.control.errors import NotFound, is_redis_outage, short_reason
from services.control.position_codec import Mark, position_from_row
from services.control.servicer import Context, serve
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import position_pb2 as ppb

log = logging.getLogger(__name__)

MAX_MARK_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a Timestamp holds


class MarketReads(Protocol):
    """Marks and market slugs of assets (what ingest keeps for them)."""

    async def read(self, mark_assets: Sequence[str],
                   slug_assets: Sequence[str]) -> tuple[dict[str, Mark], dict[str, str]]:
        """Marks of ``mark_assets`` and slugs of ``slug_assets`` that are known."""
        ...


class RedisMarketReads:
    """:class:`MarketReads` from ingest's books and market info in Redis, in one pipelined round trip."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def read(self, mark_assets: Sequence[str],
                   slug_assets: Sequence[str]) -> tuple[dict[str, Mark], dict[str, str]]:
        if not mark_assets and not slug_assets:
            return {}, {}
        try:
            pipe = self.redis.pipeline(transaction=False)
            if mark_assets:
                pipe.mget([book_key(asset) for asset in mark_assets])
            for asset in slug_assets:
                pipe.hget(market_key(asset), "market_slug")
            replies = await pipe.execute()
            books = replies.pop(0) if mark_assets else []
        except Exception as exc:
            if not is_redis_outage(exc):
                raise
            log.warning("positions served without marks: redis unavailable", extra={"error": short_reason(exc)})
            return {}, {}
        marks: dict[str, Mark] = {}
        for asset, raw in zip(mark_assets, books, strict=True):
            if not raw:
                continue
            try:
                mark = _mark_of(raw)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError):
                log.warning("malformed book in redis; position left unmarked", extra={"asset_id": asset})
                continue
            if mark is not None:
                marks[asset] = mark
        slugs = {asset: raw for asset, raw in zip(slug_assets, replies, strict=True) if raw}
        return marks, slugs


def _mark_of(raw: str) -> Mark | None:
    """The mark of a stored book (None when it has no price); ValueError when its price is no price (not in
    [0, 1]) or its update time is one no Timestamp holds."""
    price, updated_ms = mark_from_json(raw)
    if price is None:
        return None
    if not (price.is_finite() and 0 <= price <= 1) or not 0 <= updated_ms <= MAX_MARK_MS:
        raise ValueError("book out of range")
    return price, updated_ms


class PositionUseCases:
    """Read positions pages."""

    def __init__(self, db: Database, markets: MarketReads, *, page_tokens: pagination.PageTokens) -> None:
        self.db = db
        self.markets = markets
        self.tokens = page_tokens

    async def subscription_page(self, subscription_id: str, *, state: int, page_size: int,
                                page_token: str) -> pb.ListSubscriptionPositionsResponse:
        """One subscription's positions, newest first; NotFound for an unknown subscription."""
        sid = v.path_id("subscription", subscription_id)
        stored_state, size = _filters(state, page_size)
        fp = pagination.fingerprint(sid, stored_state)
        after = self.tokens.decode(page_token, "sub_positions", fp)
        async with self.db.read() as conn:
            if not await position_repo.subscription_exists(conn, sid):
                raise NotFound(f"subscription {sid} not found")
            rows = await position_repo.list_page(conn, subscription_id=sid, state=stored_state, after=after,
                                                 limit=size + 1)
        out = pb.ListSubscriptionPositionsResponse()
        out.next_page_token = await self._fill(rows, size, out.positions, "sub_positions", fp)
        return out

    async def wallet_page(self, wallet: str, *, state: int, page_size: int,
                          page_token: str) -> pb.ListPositionsResponse:
        """Every position of one follower wallet (copied, manual, external), newest first."""
        addr = v.address("wallet", wallet)
        stored_state, size = _filters(state, page_size)
        fp = pagination.fingerprint(addr, stored_state)
        after = self.tokens.decode(page_token, "positions", fp)
        async with self.db.read() as conn:
            rows = await position_repo.list_page(conn, wallet=addr, state=stored_state, after=after, limit=size + 1)
        out = pb.ListPositionsResponse()
        out.next_page_token = await self._fill(rows, size, out.positions, "positions", fp)
        return out

    async def _fill(self, rows: list[Row], size: int, into: Any, kind: str, fp: str) -> str:
        """Add the page's positions to ``into`` (a repeated field); returns the next page's token."""
        page = rows[:size]
        mark_assets = sorted({r["asset_id"] for r in page if r["state"] == "OPEN"})
        slug_assets = sorted({r["asset_id"] for r in page if not r["market_slug"]})
        marks, slugs = await self.markets.read(mark_assets, slug_assets)
        for row in page:
            position_from_row(row, into.add(), mark=marks.get(row["asset_id"]),
                              slug=slugs.get(row["asset_id"], ""))
        if len(rows) <= size:
            return ""
        last = page[-1]
        return self.tokens.encode(kind, fp, pagination.Cursor(last["opened_at"], last["id"]))


def _filters(state: int, page_size: int) -> tuple[str, int]:
    """The stored state name ("" for all) and the page size, validated."""
    v.enum("state", state, ppb.PositionState.DESCRIPTOR, required=False)
    return (short(ppb.PositionState, state) if state else ""), v.page_size(page_size)


class PositionServicer(pb_grpc.PositionServiceServicer):
    """REST /subscriptions/{id}/positions and /positions."""

    def __init__(self, positions: PositionUseCases) -> None:
        self.positions = positions

    async def ListSubscriptionPositions(self, request: pb.ListSubscriptionPositionsRequest,
                                        context: Context) -> pb.ListSubscriptionPositionsResponse:
        return await serve(context, "ListSubscriptionPositions", lambda c: self.positions.subscription_page(
            request.id, state=request.state, page_size=request.page_size, page_token=request.page_token))

    async def ListPositions(self, request: pb.ListPositionsRequest, context: Context) -> pb.ListPositionsResponse:
        return await serve(context, "ListPositions", lambda c: self.positions.wallet_page(
            request.wallet, state=request.state, page_size=request.page_size, page_token=request.page_token))
