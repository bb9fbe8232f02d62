"""Readiness: PostgreSQL, Redis and (optionally) the pipeline services' gRPC health, checked concurrently,
plus the executor's circuit breaker per venue (``tt:breaker:{venue}``, mirrored there by the executor).

A breaker is shown (``breaker.insiders: "open since 2026-…Z after 5 failures"``) but never makes
/ready fail: an open breaker is the executor protecting a failing venue, not control being unable to
serve, and a probe that flapped with the venue would get control restarted for nothing.

A failed check reads as a fixed word (``connection refused``, ``timed out``, ...; the exception's text,
which may name hosts and users, goes to the log). Probes are answered from a result at most
``READY_MAX_AGE_S`` old, with one check in flight at a time that concurrent probes share
(:class:`SharedResult`), so a flood of probes costs PostgreSQL, Redis and the services nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.control.db import Database
from services.control.errors import outage_reason, short_reason

log = logging.getLogger(__name__)
Check = Callable[[], Awaitable[None]]
T = TypeVar("T")

BREAKER_PREFIX = "breaker."
READY_MAX_AGE_S = 1.0


class NotServing(RuntimeError):
    """A service answered its health check with a status other than SERVING."""


class SharedResult(Generic[T]):
    """The result of ``produce`` reused while younger than ``max_age_s`` (from when it was started), with
    one call in flight at a time: callers arriving meanwhile await the same one. A caller that gives up
    (cancelled) does not cancel it for the others."""

    def __init__(self, produce: Callable[[], Awaitable[T]], max_age_s: float = READY_MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._produce = produce
        self._max_age_s = max_age_s
        self._clock = clock
        self._task: asyncio.Task[T] | None = None
        self._started = 0.0

    async def get(self) -> T:
        """The shared result: the last one while fresh, else the one in flight, else a new one."""
        task = self._task
        if task is None or (task.done() and self._clock() - self._started >= self._max_age_s):
            self._started = self._clock()
            task = self._task = asyncio.ensure_future(self._produce())
        return await asyncio.shield(task)


def breaker_key(venue: str) -> str:
    """Redis key where the executor mirrors a venue's circuit breaker."""
    return f"tt:breaker:{venue}"


def describe_breaker(raw: dict[Any, Any]) -> str:
    """``closed`` / ``open since <UTC time> after N failures`` / ``half_open (probe out)`` from the hash
    (an absent hash is a breaker that never changed: closed)."""
    h = {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
         for k, v in raw.items()}
    state = h.get("state", "CLOSED").lower()
    failures = h.get("failures", "0")
    if state == "open":
        try:
            since = datetime.fromtimestamp(int(h.get("opened_at_ms", "0")) / 1000, UTC)
        except (ValueError, OverflowError, OSError):
            return f"open after {failures} failures"
        return f"open since {since.isoformat(timespec='milliseconds').replace('+00:00', 'Z')} after {failures} failures"
    if state == "half_open":
        return "half_open (probe out)" if h.get("probe_out") == "1" else "half_open"
    if state == "closed":
        return "closed" if failures in ("", "0") else f"closed ({failures} recent failures)"
    return f"unknown state {state[:40]!r}"


def is_ready(checks: dict[str, str]) -> bool:
    """True when every dependency is ok (breaker states are information, not readiness)."""
    return all(state == "ok" for name, state in checks.items() if not name.startswith(BREAKER_PREFIX))


class Readiness:
    """Runs every dependency check; the overall answer names what is down."""

    def __init__(self, db: Database, redis: Any, database_url: str, *, timeout_s: float,
                 services: tuple[tuple[str, str], ...] = (), breaker_venues: tuple[str, ...] = (),
                 open_channel: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel) -> None:
        self.db = db
        self.redis = redis
        self.database_url = database_url
        self.timeout_s = timeout_s
        self.services = services
        self.breaker_venues = breaker_venues
        self.open_channel = open_channel

    async def check(self) -> dict[str, str]:
        """``{"postgres": "ok", "redis": "connection refused", ..., "breaker.paper": "closed"}``, in a stable order."""
        checks: dict[str, Check] = {"postgres": self._postgres, "redis": self._redis}
        for name, target in self.services:
            checks[name] = self._grpc_health(target)
        results = await asyncio.gather(*(self._run(n, c) for n, c in checks.items()),
                                       *(self._breaker(v) for v in self.breaker_venues))
        names = [*checks, *(BREAKER_PREFIX + v for v in self.breaker_venues)]
        return dict(zip(names, results, strict=True))

    async def _breaker(self, venue: str) -> str:
        try:
            raw = await asyncio.wait_for(self.redis.hgetall(breaker_key(venue)), self.timeout_s)
        except TimeoutError:
            return f"unknown (no answer from redis within {self.timeout_s:g}s)"
        except Exception as exc:  # noqa: BLE001 - an unreadable breaker is an answer too
            return "unknown (" + outage_reason(exc) + ")"
        return describe_breaker(raw or {})

    async def _run(self, name: str, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self.timeout_s)
        except TimeoutError:
            return f"no answer within {self.timeout_s:g}s"
        except NotServing as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - every failure is a readiness answer
            log.warning("readiness check failed", extra={"check": name, "error": short_reason(exc, 300)})
            return outage_reason(exc)
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
            async with self.open_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout_s)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    raise NotServing(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        return check


def summary(checks: dict[str, str]) -> str:
    """``not ready: postgres (connection refused), redis ok, breaker.paper closed``."""
    parts = [f"{name} {state}" if state == "ok" or name.startswith(BREAKER_PREFIX) else f"{name} ({state})"
             for name, state in checks.items()]
    return "not ready: " + ", ".join(parts)
