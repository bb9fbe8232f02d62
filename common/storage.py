"""PostgreSQL pool, Redis client and ordered SQL migrations."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import AsyncConnection, pq
from psycopg.errors import error_from_result
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 7_310_001


def compact_sql(sql: str) -> str:
    """``sql`` with its whitespace runs collapsed to one space, so that a long statement stays within the
    length psycopg caches the parsing of (``MAX_CACHED_STATEMENT_LENGTH``): a longer one has its
    placeholders parsed in Python on every execute (~0.12 ms for 4 kB here). For statements without
    ``--`` comments or string literals whose spacing matters; raises ValueError on a comment."""
    if "--" in sql:
        raise ValueError("compact_sql: a -- comment would swallow the rest of the statement")
    return " ".join(sql.split())


# Server settings of a service whose statements reach their rows by key (orders by client order id, positions
# and copy exits by wallet and asset) for a list of changes. A plan cached while a table is still small (a fresh
# database, or one whose statistics last saw a handful of rows) hash-joins or scans it instead, and then reads the
# whole table on every call as it grows, until autovacuum happens to analyze it; a plan made on statistics that saw
# tiny scans scans it once per change. Without hash and merge joins, and without sequential scans where an index
# serves, the plan left is one index lookup per change, whatever the table's size.
KEYED_LOOKUPS = "-c enable_hashjoin=off -c enable_mergejoin=off -c enable_seqscan=off"


async def _set_autocommit(conn: Any) -> None:
    await conn.set_autocommit(True)


def _configure(autocommit: bool, warm: Callable[[AsyncConnection[Any]], Awaitable[None]] | None
               ) -> Callable[[AsyncConnection[Any]], Awaitable[None]] | None:
    """The pool's set-up of a new connection: autocommit, then ``warm``."""
    if warm is None:
        return _set_autocommit if autocommit else None

    async def configure(conn: AsyncConnection[Any]) -> None:
        if autocommit:
            await _set_autocommit(conn)
        await warm(conn)
        if not autocommit:  # leave no transaction open behind the warm-up
            await conn.rollback()

    return configure


def named(url: str, application_name: str) -> dict[str, str]:
    """Connection keywords naming the connection in ``pg_stat_activity`` (none when the URL names it already)."""
    return {"application_name": application_name} if application_name and "application_name" not in url else {}


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 5.0,
                      autocommit: bool = False, options: str = "", application_name: str = "",
                      warm: Callable[[AsyncConnection[Any]], Awaitable[None]] | None = None
                      ) -> AsyncConnectionPool[Any]:
    """An open async connection pool with dict rows and a bounded connect timeout.

    ``autocommit``: a single statement is one round trip with no BEGIN/COMMIT; statements that must
    hold together use ``conn.transaction()``. ``options``: server settings of every connection
    (libpq's ``options``, e.g. ``-c enable_hashjoin=off``). ``application_name``: what
    ``pg_stat_activity`` shows for these connections (the service), unless the URL names one. ``warm``: run on
    every new connection before the pool hands it out (a failure discards the connection, as a failed connect).
    """
    kwargs: dict[str, Any] = {"row_factory": dict_row, "connect_timeout": max(1, int(timeout_s)),
                              **named(url, application_name)}
    if options:
        kwargs["options"] = options
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        kwargs=kwargs,
        configure=_configure(autocommit, warm),
        open=False,
        reconnect_timeout=0,
    )
    await pool.open(wait=False)
    return pool


@contextlib.asynccontextmanager
async def closed_on_failure(pool: AsyncConnectionPool[Any], timeout_s: float = 2.0) -> AsyncIterator[None]:
    """Close ``pool`` when the block fails (a start-up step after it...). psycopg_pool's own tasks catch a
    cancellation to keep the pool consistent, so a pool left open keeps asyncio's clean-up after a failed main
    waiting for them for ever."""
    try:
        yield
    except BaseException:
        try:
            await pool.close(timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - the failure that brought us here is the one to raise
            log.warning("PostgreSQL pool not closed cleanly", extra={"error": repr(exc)[:300]})
        raise


@contextlib.asynccontextmanager
async def pipelined_transaction(conn: Any) -> AsyncIterator[Any]:
    """One transaction in pipeline mode on an autocommit connection, in as few round trips as its reads
    need: ``BEGIN`` goes out with the first statement whose result is fetched, ``COMMIT`` with the
    statements queued last, when the block ends (errors of those surface there). Rolled back on any error.

    psycopg's ``conn.transaction()`` inside ``conn.pipeline()`` nests a second pipeline around the
    block, which syncs on entry (``BEGIN`` alone) and again before ``COMMIT``: two round trips more.
    Yields the connection; do not nest ``conn.transaction()`` in the block.
    """
    async with conn.pipeline() as pipeline:
        await conn.execute("BEGIN")
        try:
            yield conn
        except BaseException:
            # a failed statement discards what follows it until the next sync; then roll the block back
            with contextlib.suppress(Exception):
                await pipeline.sync()
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
                await pipeline.sync()
            raise
        await conn.execute("COMMIT")


def create_redis(url: str, *, timeout_s: float = 2.0) -> aioredis.Redis:
    """An async Redis client (bytes responses off: strings in, strings out)."""
    return aioredis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=10,
    )


async def redis_run_id(redis: aioredis.Redis) -> str:
    """The Redis server's run id: new at every start of the server, and another server's after a failover."""
    return str((await redis.info("server"))["run_id"])


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The ``NNNN_name.sql`` files in apply order."""
    return sorted(p for p in directory.glob("*.sql") if p.name[:4].isdigit())


def apply_migrations(url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not applied yet, each in its own transaction, under an advisory lock.

    Safe to call from several processes at once. Returns the names applied now.
    """
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for path in migration_files(directory):
                if path.name in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text().encode())
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                applied_now.append(path.name)
                log.info("migration applied", extra={"migration": path.name})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


def checked_result(results: list[pq.abc.PGresult], conn: AsyncConnection[Any],
                   expected: pq.ExecStatus) -> pq.abc.PGresult:
    """The last of ``results`` (of a statement sent through libpq directly), raised as psycopg raises it unless all of
    them are ``expected``."""
    if not results:
        raise psycopg.OperationalError("no result from the server")
    for res in results:
        if res.status != expected:
            raise error_from_result(res, encoding=conn.info.encoding)
    return results[-1]
