"""Pages of one follower's subscriptions: the gRPC message (ListSubscriptions) and the REST JSON body
(ListSubscriptionsJson), both assembled from per-(id, row version) caches plus live stats.

A page query reads each row's id, version and live stats; every subscription whose version is
cached is taken from the cache, the others are read whole (and cached). If one of those changed
again between the two queries, the page is read again in one statement and decoded row by row,
so a page is always one consistent snapshot. Only control writes ``subscriptions`` and every write
bumps ``version``, so a cached entry is never served after a change by any writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from services.control import content_coding, list_cache, list_json, page_cache, pagination, sub_repo
from services.control import validation as v
from services.control.codec import dec, short, subscription_from_row
from services.control.db import Conn, Database
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

T = TypeVar("T")
_STATS_MEMO_MAX = 10_000


class EncodedBody(NamedTuple):
    """A REST body and its content coding ("" for none)."""

    data: bytes
    encoding: str = ""


@dataclass(frozen=True, slots=True)
class PageQuery:
    """A validated list request."""

    follower: str
    leader: str
    state: str  # stored short name, "" for any
    size: int
    after: pagination.Cursor | None
    fingerprint: str
    tokens: pagination.PageTokens = field(compare=False)  # not part of the page's identity (cache key)

    def next_token(self, cursor: pagination.Cursor) -> str:
        """The signed token of the page after ``cursor``."""
        return self.tokens.encode("subs", self.fingerprint, cursor)


def page_query(*, follower_proxy: str, leader_proxy: str, state: int, page_size: int, page_token: str,
               tokens: pagination.PageTokens) -> PageQuery:
    """Validate a ListSubscriptionsRequest's fields (InvalidArgument naming the field)."""
    follower = v.address("followerProxy", follower_proxy)
    leader = v.address("leaderProxy", leader_proxy) if leader_proxy else ""
    v.enum("state", state, spb.SubscriptionState.DESCRIPTOR, required=False)
    stored_state = short(spb.SubscriptionState, state) if state else ""
    size = v.page_size(page_size)
    fp = pagination.fingerprint(follower, leader, stored_state)
    after = tokens.decode(page_token, "subs", fp)
    return PageQuery(follower, leader, stored_state, size, after, fp, tokens)


def _stats_of(text: str) -> spb.Stats:
    """The Stats of a head's :func:`sub_repo.stats_text` (empty fields: no stats row yet)."""
    copied, skipped, exposure, realized, unrealized = text.split("|")
    return spb.Stats(copied=int(copied or 0), skipped=int(skipped or 0), exposure_usd=dec(exposure),
                     realized_pnl_usd=dec(realized), unrealized_pnl_usd=dec(unrealized))


class SubscriptionPages:
    """List pages over the database, with the gRPC and the JSON caches."""

    def __init__(self, db: Database, cache_entries: int, page_cache_bytes: int = 0) -> None:
        self.db = db
        self.bytes_cache = list_cache.SubscriptionBytesCache(cache_entries)
        self.json_cache = list_json.SubscriptionJsonCache(cache_entries)
        self.json_pages = page_cache.PageCache(page_cache_bytes)
        self._stats_fields: dict[str, bytes] = {}
        self._stats_json: dict[str, bytes] = {}

    async def message(self, q: PageQuery) -> pb.ListSubscriptionsResponse:
        """The page as a ListSubscriptionsResponse (gRPC)."""
        cached = await self._cached(q, self.bytes_cache, list_cache.parts_of, with_digest=False)
        if cached is None:
            return await self._decoded(q)
        rows, token, _ = cached
        out = pb.ListSubscriptionsResponse.FromString(list_cache.page_bytes(
            (parts, self._stats_field(head)) for parts, head in rows if parts is not None))
        out.next_page_token = token
        return out

    async def json(self, q: PageQuery) -> bytes:
        """The page as the transcoder's JSON of a ListSubscriptionsResponse (REST): the page kept in
        ``json_pages`` when its rows' digest is unchanged, else built (and kept)."""
        return (await self.encoded_json(q, gzip_ok=False)).data

    async def encoded_json(self, q: PageQuery, *, gzip_ok: bool) -> EncodedBody:
        """Like :meth:`json`; a kept page goes out gzipped when ``gzip_ok`` (a page just built goes out
        as it is: compressing it would cost more than sending it, and it may change again at once)."""
        kept = self.json_pages.get(q)
        if kept is not None and not kept.changing:
            async with self.db.read() as conn:
                digest = await sub_repo.page_digest(conn, follower_proxy=q.follower, leader_proxy=q.leader,
                                                    state=q.state, after=q.after, limit=q.size + 1)
            if digest == kept.digest:
                if gzip_ok:
                    return EncodedBody(self.json_pages.gzipped(q, kept), content_coding.GZIP)
                return EncodedBody(kept.body)
        return EncodedBody(await self._built_json(q, kept))

    async def _built_json(self, q: PageQuery, kept: page_cache.Page | None) -> bytes:
        """The page built from the row caches (reusing ``kept``'s rows that are unchanged), and kept."""
        reuse = kept.rows if kept is not None else None
        cached = await self._cached(q, self.json_cache, list_json.parts_of,
                                    with_digest=self.json_pages.max_bytes > 0, reuse=reuse)
        if cached is None:
            return list_json.response_json(await self._decoded(q))
        rows, token, digest = cached
        if digest is None:
            return list_json.page_json_of_rows(((parts, self._stats_object(head)) for parts, head in rows
                                                if parts is not None), token)
        items: dict[str, bytes] = {}
        for parts, head in rows:
            key = head[sub_repo.HEAD_KEY]
            items[key] = list_json.item(parts, self._stats_object(head)) if parts is not None else reuse[key]  # type: ignore[index]
        body = list_json.page_json(items.values(), token)
        self.json_pages.put(q, digest, body, items)
        return body

    async def _cached(self, q: PageQuery, cache: list_cache.VersionedLru[T], encode: Callable[[spb.Subscription], T],
                      *, with_digest: bool, reuse: Mapping[str, bytes] | None = None,
                      ) -> tuple[list[tuple[T | None, sub_repo.ListHead]], str, str | None] | None:
        """Each row's cached value with its head, the next page token and (``with_digest``) the digest of
        the rows; None when a row changed between the page query and the read of the uncached rows
        (read the page as one snapshot). A row whose head is in ``reuse`` comes with None: the caller
        has its output already."""
        async with self.db.read() as conn:
            heads = await sub_repo.list_heads(conn, follower_proxy=q.follower, leader_proxy=q.leader, state=q.state,
                                              after=q.after, limit=q.size + 1, with_digest=with_digest)
            page = heads[:q.size]
            if reuse:
                page = [h for h in page if h[sub_repo.HEAD_KEY] not in reuse]
            found = {h[0]: value for h in page if (value := cache.get(h[0], h[1])) is not None}
            if len(found) < len(page):  # not cached yet, or changed since: read those rows whole
                versions = {h[0]: h[1] for h in page}
                for stored in await sub_repo.get_many(conn, [h[0] for h in page if h[0] not in found]):
                    if stored.version != versions[stored.sub.id]:
                        return None
                    found[stored.sub.id] = cache.remember(stored.sub.id, stored.version, encode(stored.sub))
        token = ""
        if len(heads) > q.size:
            last = heads[q.size - 1]
            token = q.next_token(pagination.Cursor(last[2], last[0]))
        digest = heads[0][-1] if heads and with_digest else None
        if reuse:
            return ([(found.get(h[0]), h) for h in heads[:q.size] if h[0] in found or h[sub_repo.HEAD_KEY] in reuse],
                    token, digest)
        return [(found[h[0]], h) for h in page if h[0] in found], token, digest

    async def _decoded(self, q: PageQuery) -> pb.ListSubscriptionsResponse:
        """A page read whole in one statement and decoded row by row (no cache)."""
        async with self.db.read() as conn:
            return await decoded_page(conn, q)

    def _stats_field(self, head: sub_repo.ListHead) -> bytes:
        """The serialized ``stats`` of a list row (memoized: most rows share a few values)."""
        return _memo(self._stats_fields, sub_repo.stats_text(head), list_cache.stats_field)

    def _stats_object(self, head: sub_repo.ListHead) -> bytes:
        """The JSON ``stats`` object of a list row (memoized like :meth:`_stats_field`)."""
        return _memo(self._stats_json, sub_repo.stats_text(head), list_json.stats_json)


def _memo(memo: dict[str, bytes], key: str, render: Callable[[spb.Stats], bytes]) -> bytes:
    """``render`` of the stats in ``key``, remembered (the memo is emptied when it outgrows its bound)."""
    out = memo.get(key)
    if out is None:
        if len(memo) > _STATS_MEMO_MAX:
            memo.clear()
        out = memo[key] = render(_stats_of(key))
    return out


async def decoded_page(conn: Conn, q: PageQuery) -> pb.ListSubscriptionsResponse:
    """A page read whole in one statement on ``conn`` and decoded row by row."""
    rows = await sub_repo.list_page(conn, follower_proxy=q.follower, leader_proxy=q.leader, state=q.state,
                                    after=q.after, limit=q.size + 1)
    out = pb.ListSubscriptionsResponse()
    add = out.subscriptions.add
    for row in rows[:q.size]:
        subscription_from_row(row, add())
    if len(rows) > q.size:
        last = rows[q.size - 1]
        out.next_page_token = q.next_token(pagination.Cursor(last["create_time"], last["id"]))
    return out
