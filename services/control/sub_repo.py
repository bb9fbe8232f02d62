"""SQL for subscriptions and their fills.

Writes raise ``psycopg.errors.UniqueViolation`` on index ``subscriptions_one_active`` when a second
ACTIVE subscription for one (follower wallet, leader) would appear; callers map it with
:func:`is_duplicate_active` / :func:`duplicate_active` after their transaction rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg.errors
from psycopg.rows import tuple_row

from common.storage import pipelined_transaction
from services.control import codec, wallet_modes
from services.control.db import Conn
from services.control.errors import AlreadyExists
from services.control.pagination import Cursor
from tradingtools.control.v1 import subscription_pb2 as spb

ONE_ACTIVE_INDEX = "subscriptions_one_active"
_FIELDS = (
    "s.id, s.follower_user_id, s.follower_wallet_id, s.follower_proxy, s.leader_proxy, s.label, s.state,"
    " s.mode, s.applied_multiplier, s.paused_reason, s.version, s.create_time, s.update_time, s.active_time,"
    " s.config_pb,"
    " CASE WHEN s.config_pb IS NULL THEN jsonb_build_object('sizing', s.sizing, 'filters', s.filters,"
    " 'risk', s.risk, 'exits', s.exits, 'perf', s.perf) END AS config_json"
)


def _with_stats(alias: str) -> str:
    """The LEFT JOIN of ``alias``'s stats row (``st``; ``st.sx`` its xmin) as one primary-key lookup per row.

    OFFSET 0 keeps PostgreSQL from flattening the lookup into a plain join, which it would run as a
    hash join over the whole stats table (~20 ms per page at 100,000 subscriptions).
    """
    return (" LEFT JOIN LATERAL (SELECT st.xmin AS sx, st.copied, st.skipped, st.exposure_usd, st.realized_pnl_usd,"
            f" st.unrealized_pnl_usd FROM subscription_stats st WHERE st.subscription_id = {alias}.id OFFSET 0)"
            " st ON true")


_SELECT = (
    f"SELECT {_FIELDS}, st.copied, st.skipped, st.exposure_usd, st.realized_pnl_usd, st.unrealized_pnl_usd"
    " FROM subscriptions s" + _with_stats("s")
)
_COLUMNS = ("id", "follower_user_id", "follower_wallet_id", "follower_proxy", "leader_proxy", "label",
            "state", "mode", "sizing", "filters", "risk", "exits", "perf", "config_pb", "applied_multiplier",
            "paused_reason", "create_time", "update_time", "active_time")
_UPDATABLE = ("label", "state", "mode", "sizing", "filters", "risk", "exits", "perf", "config_pb",
              "applied_multiplier", "paused_reason", "update_time", "active_time")


@dataclass(frozen=True, slots=True)
class Stored:
    """A subscription as read, with its row version (bumped on every change)."""

    sub: spb.Subscription
    version: int


def _stored(row: codec.Row) -> Stored:
    return Stored(codec.subscription_from_row(row), int(row["version"]))


async def get(conn: Conn, subscription_id: str, *, for_update: bool = False) -> Stored | None:
    """One subscription with its stats; locks the row when ``for_update``."""
    sql = _SELECT + " WHERE s.id = %s" + (" FOR UPDATE OF s" if for_update else "")
    row = await (await conn.execute(sql, (subscription_id,))).fetchone()
    return None if row is None else _stored(row)


async def insert(conn: Conn, sub: spb.Subscription, doc: codec.Row | None = None) -> int:
    """Queue the insert of a new subscription (``doc``: its ``codec.audit_subscription`` when known);
    returns its version (1)."""
    sql = (f"INSERT INTO subscriptions ({', '.join(_COLUMNS)}) VALUES"
           f" ({', '.join('%(' + c + ')s' for c in _COLUMNS)})")
    await conn.execute(sql, codec.subscription_params(sub, doc))
    return 1


# A create in ONE statement (one round trip, in a transaction behind the wallet's mode lock): the row,
# its audit row and, with an idempotency key, the key's claim with the response to replay. Nothing is
# written when the wallet is held in the other execution mode (``c``: see ``wallet_modes``). With a key
# the row is inserted only when the claim succeeds (a key seen before inserts nothing: the caller then
# takes the transactional replay path). A failure of any part (e.g. the one-ACTIVE index) fails the whole
# statement.
_CONFLICT_OF_CREATE = f"c AS MATERIALIZED ({wallet_modes.CONFLICT})"
_AUDIT_OF_CREATED = (
    "a AS (INSERT INTO audit_log (at, token_id, method, entity_type, entity_id, before, after, request_id)"
    " SELECT %(create_time)s, %(a_token_id)s, %(a_method)s, 'subscription', s.id, NULL, %(a_after)s,"
    " %(a_request_id)s FROM s)"
)
_CREATED = ("SELECT (SELECT count(*) FROM s) AS created, (SELECT kind FROM c) AS conflict_kind,"
            " (SELECT ref FROM c) AS conflict_ref")
_CREATE_SQL = (
    f"WITH {_CONFLICT_OF_CREATE}, s AS (INSERT INTO subscriptions ({', '.join(_COLUMNS)})"
    f" SELECT {', '.join('%(' + c + ')s' for c in _COLUMNS)} WHERE NOT EXISTS (SELECT 1 FROM c) RETURNING id),"
    f" {_AUDIT_OF_CREATED} {_CREATED}"
)
_CREATE_KEYED_SQL = (
    f"WITH {_CONFLICT_OF_CREATE},"
    " k AS (INSERT INTO idempotency_keys (token_id, method, key, request_hash, created_at, response)"
    " SELECT %(a_token_id)s, %(a_method)s, %(k_key)s, %(k_hash)s, %(create_time)s, %(k_response)s"
    " WHERE NOT EXISTS (SELECT 1 FROM c) ON CONFLICT (method, key) DO NOTHING RETURNING 1),"
    f" s AS (INSERT INTO subscriptions ({', '.join(_COLUMNS)})"
    f" SELECT {', '.join('%(' + c + ')s' for c in _COLUMNS)} WHERE EXISTS (SELECT 1 FROM k) RETURNING id),"
    f" {_AUDIT_OF_CREATED} {_CREATED}"
)


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An idempotency key to claim together with a create, and the response it will replay."""

    key: str
    request_hash: str
    response: bytes


@dataclass(frozen=True, slots=True)
class Created:
    """What a create statement did: ``created`` the row, or found ``conflict`` (and wrote nothing)."""

    created: bool
    conflict: wallet_modes.Conflict | None


async def insert_created(conn: Conn, sub: spb.Subscription, doc: codec.Row, *, token_id: str, method: str,
                         request_id: str, claim: IdempotencyClaim | None = None) -> Created:
    """Insert a new subscription (``doc`` = its ``codec.audit_subscription``) with its audit row in one
    statement, behind the wallet's mode lock, on an autocommit connection; with ``claim``, only if the
    key was never used. Nothing is written when the key was used or the wallet is in the other mode."""
    params = codec.subscription_params(sub, doc)
    params.update(a_token_id=token_id, a_method=method, a_request_id=request_id, a_after=codec.jsonb(doc))
    if claim is not None:
        params.update(k_key=claim.key, k_hash=claim.request_hash, k_response=claim.response)
    sql = _CREATE_SQL if claim is None else _CREATE_KEYED_SQL
    # lock, statement and COMMIT leave together: the statement's snapshot is taken once the lock is held
    async with pipelined_transaction(conn):
        await conn.execute(wallet_modes.LOCK, params)
        cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("create statement returned no row")
    conflict = None
    if row["conflict_kind"] is not None:
        conflict = wallet_modes.Conflict(str(row["conflict_kind"]), str(row["conflict_ref"]))
    return Created(int(row["created"]) == 1, conflict)


async def update(conn: Conn, sub: spb.Subscription, locked_version: int) -> int:
    """Queue the write of the changeable columns of a subscription read ``FOR UPDATE`` at
    ``locked_version`` in this transaction; returns the new version."""
    sets = ", ".join(f"{c} = %({c})s" for c in _UPDATABLE)
    stop = ""
    if sub.state == spb.SUBSCRIPTION_STATE_STOPPED:
        stop = ", stop_time = COALESCE(stop_time, %(update_time)s)"
    sql = f"UPDATE subscriptions SET {sets}{stop}, version = version + 1 WHERE id = %(id)s"
    await conn.execute(sql, codec.subscription_params(sub))
    return locked_version + 1


def is_duplicate_active(exc: BaseException) -> bool:
    """True when ``exc`` is the one-ACTIVE-per-wallet-and-leader violation."""
    return (isinstance(exc, psycopg.errors.UniqueViolation)
            and exc.diag.constraint_name == ONE_ACTIVE_INDEX)


async def active_id(conn: Conn, follower_wallet_id: str, leader_proxy: str) -> str | None:
    """Id of the ACTIVE subscription of this wallet to this leader, if any."""
    row = await (await conn.execute(
        "SELECT id FROM subscriptions WHERE follower_wallet_id = %s AND leader_proxy = %s AND state = 'ACTIVE'",
        (follower_wallet_id, leader_proxy))).fetchone()
    return None if row is None else str(row["id"])


def duplicate_active(follower_wallet_id: str, leader_proxy: str, existing: str | None) -> AlreadyExists:
    """The 409 for a second ACTIVE subscription."""
    which = f" ({existing})" if existing else ""
    return AlreadyExists(f"an ACTIVE subscription{which} already copies leaderProxy {leader_proxy} "
                         f"for followerWalletId {follower_wallet_id}")


def _page_filter(follower_proxy: str, leader_proxy: str, state: str, after: Cursor | None,
                 limit: int) -> tuple[str, dict[str, Any]]:
    """The WHERE clause and parameters of one page of a follower's subscriptions."""
    where = ["s.follower_proxy = %(fp)s"]
    if leader_proxy:
        where.append("s.leader_proxy = %(lp)s")
    if state:
        where.append("s.state = %(state)s")
    if after is not None:
        where.append("(s.create_time, s.id) > (%(t)s, %(i)s)")
    params = {"fp": follower_proxy, "lp": leader_proxy, "state": state, "limit": limit,
              "t": after.time if after else None, "i": after.id if after else None}
    return " AND ".join(where), params


async def list_page(conn: Conn, *, follower_proxy: str, leader_proxy: str, state: str,
                    after: Cursor | None, limit: int) -> list[codec.Row]:
    """Up to ``limit`` subscription rows of a follower after ``after``, oldest first
    (decode with ``codec.subscription_from_row``)."""
    sql, params = page_statement(follower_proxy=follower_proxy, leader_proxy=leader_proxy, state=state,
                                 after=after, limit=limit)
    return await (await conn.execute(sql, params)).fetchall()


def page_statement(*, follower_proxy: str, leader_proxy: str, state: str, after: Cursor | None,
                   limit: int) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of :func:`list_page`."""
    where, params = _page_filter(follower_proxy, leader_proxy, state, after, limit)
    return f"{_SELECT} WHERE {where} ORDER BY s.create_time, s.id LIMIT %(limit)s", params


# (id, version, create_time, state key, change key[, digest]). The state key is the text of the row's
# id, version and live stats (copied|skipped|exposure|realized|unrealized, empty without a stats row):
# equal keys mean the row lists identically, and :func:`stats_text` is all a page needs of the stats.
ListHead = tuple[Any, ...]
HEAD_KEY = 3  # index of the state key

# The page's rows are chosen (index order, LIMIT) before their stats are looked up.
_PAGE = ("(SELECT s.id, s.version, s.create_time FROM subscriptions s"
         " WHERE {where} ORDER BY s.create_time, s.id LIMIT %(limit)s) p" + _with_stats("p"))
# What changes when a listed row changes: its id, its version (control bumps it on every write) and
# the xmin of its stats row (every UPDATE, by any writer, writes the row again under its own
# transaction id). Cheaper for PostgreSQL than formatting the stats values of every row.
_CHANGE_KEY = "p.id || ':' || p.version || ':' || coalesce(st.sx::text, '-')"
_HEADS = ("SELECT p.id, p.version, p.create_time, format('%%s|%%s|%%s|%%s|%%s|%%s|%%s', p.id, p.version,"
          " st.copied, st.skipped, st.exposure_usd, st.realized_pnl_usd, st.unrealized_pnl_usd) AS k,"
          f" {_CHANGE_KEY} AS c FROM {_PAGE} ORDER BY p.create_time, p.id")


def stats_text(head: ListHead) -> str:
    """The live-stats part of a head's state key: ``copied|skipped|exposure|realized|unrealized``."""
    return str(head[HEAD_KEY]).split("|", 2)[2]


# The state of a page: every row's change key, in page order. Everything else a listed row shows is
# immutable or moves with one of them, so equal digests mean byte-identical pages.
_DIGEST = "md5(string_agg({key}, ',' ORDER BY {order}))"


def heads_statement(*, follower_proxy: str, leader_proxy: str, state: str, after: Cursor | None,
                    limit: int, with_digest: bool = True) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of :func:`list_heads`."""
    where, params = _page_filter(follower_proxy, leader_proxy, state, after, limit)
    if not with_digest:
        return _HEADS.format(where=where), params
    # The digest is an uncorrelated scalar subquery, an InitPlan computed once whatever the plan: as a
    # joined aggregate, a generic plan on a table without statistics re-ran it for every row.
    digest = _DIGEST.format(key="h.c", order="h.create_time, h.id")
    return (f"WITH h AS MATERIALIZED ({_HEADS.format(where=where)})"
            f" SELECT h.*, (SELECT {digest} FROM h) AS digest FROM h ORDER BY h.create_time, h.id"), params


async def list_heads(conn: Conn, *, follower_proxy: str, leader_proxy: str, state: str,
                     after: Cursor | None, limit: int, with_digest: bool = False) -> list[ListHead]:
    """Like :func:`list_page` but only each row's id, version, create time and live stats (the rest
    comes from ``list_cache`` when the version matches); ``with_digest``: each row ends with the
    page's :func:`page_digest` (read in the same statement, so it describes exactly these rows)."""
    sql, params = heads_statement(follower_proxy=follower_proxy, leader_proxy=leader_proxy, state=state,
                                  after=after, limit=limit, with_digest=with_digest)
    cur = conn.cursor(row_factory=tuple_row, binary=True)  # binary rows decode faster (timestamps above all)
    await cur.execute(sql, params)
    return await cur.fetchall()


async def page_digest(conn: Conn, *, follower_proxy: str, leader_proxy: str, state: str,
                      after: Cursor | None, limit: int) -> str | None:
    """The digest of the rows :func:`list_heads` would return now (None for an empty page)."""
    sql, params = digest_statement(follower_proxy=follower_proxy, leader_proxy=leader_proxy, state=state,
                                   after=after, limit=limit)
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(sql, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


def digest_statement(*, follower_proxy: str, leader_proxy: str, state: str, after: Cursor | None,
                     limit: int) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of :func:`page_digest`."""
    where, params = _page_filter(follower_proxy, leader_proxy, state, after, limit)
    digest = _DIGEST.format(key=_CHANGE_KEY, order="p.create_time, p.id")
    return f"SELECT {digest} FROM {_PAGE.format(where=where)}", params


async def get_many(conn: Conn, ids: list[str], *, lock: bool = False) -> list[Stored]:
    """The subscriptions with these ids (any order; unknown ids are absent); ``lock``: no change of them commits
    until the caller's transaction ends."""
    sql = _SELECT + " WHERE s.id = ANY(%s) ORDER BY s.id" + (" FOR SHARE OF s" if lock else "")
    rows = await (await conn.execute(sql, (ids,))).fetchall()
    return [_stored(r) for r in rows]


async def active_of_leader(conn: Conn, leader_proxy: str) -> list[Stored]:
    """Every ACTIVE subscription copying ``leader_proxy`` (stats not read: the index omits them)."""
    rows = await (await conn.execute(
        f"SELECT {_FIELDS} FROM subscriptions s WHERE s.leader_proxy = %s AND s.state = 'ACTIVE'",
        (leader_proxy,))).fetchall()
    return [_stored(r) for r in rows]


async def active_versions(conn: Conn) -> list[tuple[str, str, int]]:
    """(id, leader proxy, version) of every ACTIVE subscription."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute("SELECT id, leader_proxy, version FROM subscriptions WHERE state = 'ACTIVE'")
    return await cur.fetchall()


async def row_versions(conn: Conn, ids: list[str]) -> dict[str, tuple[int, bool]]:
    """(row version, ACTIVE) of each of these subscriptions (unknown ids are absent)."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute("SELECT id, version, state = 'ACTIVE' FROM subscriptions WHERE id = ANY(%s)", (ids,))
    return {sid: (int(version), bool(active)) for sid, version, active in await cur.fetchall()}


async def fills_page(conn: Conn, subscription_id: str, *, after: Cursor | None,
                     limit: int) -> list[codec.Row]:
    """Up to ``limit`` fill rows of a subscription after ``after``, newest first; not the rows of a BUY's fee booked
    alone (size 0: a Fill shows no fee, and each fill's size is the shares it filled, fee included)."""
    cond = " AND (fill_time, id) < (%(t)s, %(i)s)" if after is not None else ""
    return await (await conn.execute(
        f"SELECT * FROM fills WHERE subscription_id = %(sid)s AND size > 0{cond}"
        " ORDER BY fill_time DESC, id DESC LIMIT %(limit)s",
        {"sid": subscription_id, "limit": limit,
         "t": after.time if after else None, "i": after.id if after else None})).fetchall()
