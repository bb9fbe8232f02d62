"""Idempotent creates: the first response per (method, key) is stored in PostgreSQL in the create's own
transaction and replayed for 24 h, whichever configured token sends the replay (tokens are configured
together to rotate one caller's token); ``token_id`` records who claimed the key.

The same key with a different request body is FAILED_PRECONDITION ("idempotency key reused with a
different request"). Two concurrent requests with one key serialize on the key's row: the second
waits for the first to commit, then replays its response.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from google.protobuf.message import Message

from services.control.audit import Caller
from services.control.db import Conn
from services.control.errors import FailedPrecondition


def request_hash(request: Message) -> str:
    """sha256 of the request's deterministic serialization (the caller clears ``request_id`` first)."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


async def claim(conn: Conn, caller: Caller, digest: str, now: datetime, ttl: timedelta) -> bytes | None:
    """Claim ``caller.idempotency_key`` in this transaction; returns the stored response to replay, if any."""
    key = (caller.method, caller.idempotency_key)
    claimed = await (await conn.execute(
        "INSERT INTO idempotency_keys (method, key, token_id, request_hash, created_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (method, key) DO NOTHING RETURNING 1 AS claimed",
        (*key, caller.token_id, digest, now))).fetchone()
    if claimed is not None:
        return None
    row = await (await conn.execute(
        "SELECT request_hash, response, created_at FROM idempotency_keys"
        " WHERE method = %s AND key = %s FOR UPDATE", key)).fetchone()
    if row is None or row["created_at"] < now - ttl or row["response"] is None:
        await conn.execute(
            "INSERT INTO idempotency_keys (method, key, token_id, request_hash, created_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (method, key) DO UPDATE"
            " SET token_id = EXCLUDED.token_id, request_hash = EXCLUDED.request_hash,"
            " created_at = EXCLUDED.created_at, response = NULL",
            (*key, caller.token_id, digest, now))
        return None
    if row["request_hash"] != digest:
        raise FailedPrecondition("idempotency key reused with a different request")
    return bytes(row["response"])


async def store(conn: Conn, caller: Caller, response: Message) -> None:
    """Keep the response of a claimed key (same transaction as the create)."""
    await conn.execute(
        "UPDATE idempotency_keys SET response = %s WHERE method = %s AND key = %s",
        (response.SerializeToString(), caller.method, caller.idempotency_key))


async def purge(conn: Conn, now: datetime, ttl: timedelta) -> None:
    """Delete keys older than ``ttl``."""
    await conn.execute("DELETE FROM idempotency_keys WHERE created_at < %s", (now - ttl,))
