"""The control pool's checkout check on real PostgreSQL: no round trip for a healthy connection, the
full check for one PostgreSQL has closed."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from services.control import db
from tests.helpers import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Counts the pool's full (round-trip) checks while still running them."""
    seen: list[object] = []
    real = AsyncConnectionPool.check_connection

    async def counting(conn: db.Conn) -> None:
        seen.append(conn)
        await real(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counting))
    return seen


async def test_quiet_connection_is_trusted_and_a_closed_one_is_checked(db_url: str, checks: list[object]) -> None:
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    killer = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        await db._check_if_idle(conn)  # never returned to the pool: checked
        assert len(checks) == 1

        await db._stamp_return(conn)
        db._returned_at[conn] = time.monotonic() - 5  # idle for a while, but its socket is quiet
        await db._check_if_idle(conn)
        assert len(checks) == 1

        db._returned_at[conn] = time.monotonic() - db.TRUST_QUIET_S - 1  # quiet for too long: checked
        await db._check_if_idle(conn)
        assert len(checks) == 2

        await db._stamp_return(conn)
        await killer.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        await eventually(lambda: not db._quiet(conn))  # the backend's goodbye arrives
        with pytest.raises(psycopg.OperationalError):
            await db._check_if_idle(conn)
        assert len(checks) == 3  # the readable socket got the full check, which found it dead
    finally:
        await conn.close()
        await killer.close()
