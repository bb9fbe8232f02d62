"""Who is calling, and the audit-log rows every mutation writes in its own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from common.grpcauth import token_id
from services.control.db import Conn

__all__ = ["Caller", "token_id", "write"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one RPC."""

    token_id: str
    method: str
    request_id: str
    idempotency_key: str | None = None


async def write(conn: Conn, caller: Caller, *, entity_type: str, entity_id: str,
                before: dict[str, Any] | None, after: dict[str, Any] | None, at: datetime) -> None:
    """Insert one audit row in the caller's transaction."""
    await conn.execute(
        "INSERT INTO audit_log (at, token_id, method, entity_type, entity_id, before, after, request_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (at, caller.token_id, caller.method, entity_type, entity_id,
         None if before is None else Jsonb(before, dumps=orjson.dumps),
         None if after is None else Jsonb(after, dumps=orjson.dumps),
         caller.request_id),
    )
