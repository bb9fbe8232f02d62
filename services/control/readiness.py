"""Readiness: PostgreSQL, Redis and (optionally) the pipeline services' gRPC health, checked concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.control.db import Database
from services.control.errors import short_reason

Check = Callable[[], Awaitable[None]]


class Readiness:
    """Runs every dependency check; the overall answer names what is down."""

    def __init__(self, db: Database, redis: Any, database_url: str, *, timeout_s: float,
                 services: tuple[tuple[str, str], ...] = ()) -> None:
        self.db = db
        self.redis = redis
        self.database_url = database_url
        self.timeout_s = timeout_s
        self.services = services

    async def check(self) -> dict[str, str]:
        """``{"postgres": "ok", "redis": "connection refused", ...}``, in a stable order."""
        checks: dict[str, Check] = {"postgres": self._postgres, "redis": self._redis}
        for name, target in self.services:
            checks[name] = self._grpc_health(target)
        results = await asyncio.gather(*(self._run(c) for c in checks.values()))
        return dict(zip(checks, results, strict=True))

    async def _run(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self.timeout_s)
        except TimeoutError:
            return f"no answer within {self.timeout_s:g}s"
        except Exception as exc:  # noqa: BLE001 - every failure is a readiness answer
            return short_reason(exc, 120)
        return "ok"

    async def _postgres(self) -> None:
        try:
            await self.db.ping(self.timeout_s / 2)
        except Exception:
            # The pool only says "timeout"; one direct attempt tells why (refused, auth, …).
            conn = await psycopg.AsyncConnection.connect(self.database_url,
                                                         connect_timeout=max(1, int(self.timeout_s)))
            await conn.close()
            raise

    async def _redis(self) -> None:
        await self.redis.ping()

    def _grpc_health(self, target: str) -> Check:
        async def check() -> None:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout_s)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    raise RuntimeError(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        return check


def summary(checks: dict[str, str]) -> str:
    """``not ready: postgres (connection refused), redis ok``."""
    parts = [f"{name} ok" if state == "ok" else f"{name} ({state})" for name, state in checks.items()]
    return "not ready: " + ", ".join(parts)
