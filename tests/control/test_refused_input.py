"""Values PostgreSQL refuses are INVALID_ARGUMENT with a plain message, never INTERNAL with the SQL error."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from grpc import StatusCode

from services.control.errors import status_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("sql", "params"), [
    ("SELECT %s::numeric(6, 2)", ("123456789",)),  # numeric field overflow (22003)
    ("SELECT %s::text", ("a\x00b",)),  # NUL in text, refused by the driver (DataError)
    ("SELECT %s::timestamptz", ("2026-13-40T99:00:00Z",)),  # out of range (22008)
    ("SELECT %s::int", ("12x",)),  # invalid text representation (22P02)
    ("SELECT 1 / %s::int", (0,)),  # division by zero (22012)
    ("INSERT INTO t VALUES (%s)", (-1,)),  # check violation (23514)
    ("INSERT INTO t VALUES (%s)", (None,)),  # not-null violation (23502)
])
async def test_a_value_postgres_refuses_is_400(db_url: str, sql: str, params: tuple[Any, ...]) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("CREATE TEMP TABLE t (x int NOT NULL CHECK (x > 0))")
        with pytest.raises(psycopg.Error) as caught:
            await conn.execute(sql, params)  # type: ignore[arg-type]
    assert status_for(caught.value) == (StatusCode.INVALID_ARGUMENT, "request: a value is out of range or not storable")
