"""Small helpers for the control gRPC tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import psycopg


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call fails with (fails the test when it succeeds)."""
    try:
        result = await call
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError(f"call succeeded: {result}")


async def expect(call: Awaitable[Any], code: grpc.StatusCode, prefix: str = "") -> str:
    """Assert the call fails with ``code`` and a message starting with ``prefix``; return the message."""
    err = await rpc_error(call)
    assert err.code() == code, (err.code(), err.details())
    details = err.details() or ""
    assert details.startswith(prefix), details
    return details


def count(db_url: str, table: str, where: str = "TRUE", params: tuple[Any, ...] = ()) -> int:
    """Rows of ``table`` matching ``where``."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def query(db_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run a query and return every row."""
    with psycopg.connect(db_url) as conn:
        return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


def execute(db_url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Run a statement and commit."""
    with psycopg.connect(db_url) as conn:
        conn.execute(sql, params)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def use_cases_racing_a_write(db_url: str, redis_url: str, monkeypatch: Any, raced_id: str) -> AsyncIterator[Any]:
    """``SubscriptionUseCases`` on their own pool, where every list reads its page heads and then, before
    the rest of the page, ``raced_id`` is changed by another writer (label 'raced', version + 1)."""
    from datetime import UTC, datetime, timedelta

    from common.fastredis import FastRedis
    from common.storage import create_redis
    from services.control import sub_repo
    from services.control.db import Database, create_pool
    from services.control.hotsync import IndexSync
    from services.control.pagination import PageTokens
    from services.control.subscriptions import SubscriptionUseCases

    heads_of = sub_repo.list_heads

    async def heads_then_a_concurrent_write(*args: object, **kwargs: object) -> list[sub_repo.ListHead]:
        heads = await heads_of(*args, **kwargs)  # type: ignore[arg-type]
        execute(db_url, "UPDATE subscriptions SET label = 'raced', version = version + 1 WHERE id = %s", (raced_id,))
        return heads

    monkeypatch.setattr(sub_repo, "list_heads", heads_then_a_concurrent_write)
    pool = await create_pool(db_url, max_size=2, acquire_timeout_s=2, statement_timeout_s=2)
    redis = create_redis(redis_url)
    hot = FastRedis(redis_url, timeout_s=2.0)
    try:
        db = Database(pool)
        yield SubscriptionUseCases(db, IndexSync(db, redis, interval_s=3600, hot=hot), live_enabled=False,
                                   now=lambda: datetime.now(UTC), idempotency_ttl=timedelta(days=1),
                                   page_tokens=PageTokens(b"k" * 32))
    finally:
        await pool.close()
        await redis.aclose()
        hot.close()


async def expect_unknown_ids(call: Callable[[str], Awaitable[object]], noun: str, filler: str, spaced: str,
                             db_url: str) -> None:
    """An id far too long and one with a space are NOT_FOUND, naming the id (the long one cut short), and are
    not audited (the one audit row is the creation before)."""
    message = await expect(call(filler * 200), grpc.StatusCode.NOT_FOUND, f"{noun} " + filler * 40 + "…")
    assert message.endswith(" not found")
    await expect(call(spaced), grpc.StatusCode.NOT_FOUND, f"{noun} {spaced} not found")
    assert count(db_url, "audit_log") == 1
