"""Small helpers for the control gRPC tests."""

from __future__ import annotations

from collections.abc import Awaitable
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
