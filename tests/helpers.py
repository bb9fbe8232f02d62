"""Test helpers shared by every test module."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")
S = TypeVar("S")


async def eventually(check: Callable[[], Awaitable[T] | T], *, timeout_s: float = 10.0,
                     interval_s: float = 0.02, message: str = "condition not met") -> T:
    """Retry ``check`` until it returns a truthy value without raising AssertionError; return it."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                result = await result  # type: ignore[misc]
            if result:
                return result  # type: ignore[return-value]
            last_error = None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout_s}s") from last_error
        await asyncio.sleep(interval_s)


def eventually_sync(check: Callable[[], T], *, timeout_s: float = 10.0, interval_s: float = 0.02,
                    message: str = "condition not met") -> T:
    """Blocking variant of :func:`eventually`."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
            last_error = None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout_s}s") from last_error
        time.sleep(interval_s)


def database_url(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` instead (socket and TCP URLs alike)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


def redis_db(url: str, db: int) -> str:
    """``url`` pointing at Redis database number ``db``."""
    return database_url(url, str(db))


@contextmanager
def template_database(server_url: str, template: str, name: str) -> Iterator[str]:
    """A database ``name`` cloned from ``template`` (replacing any leftover), dropped afterwards; yields its URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield database_url(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def read_only_database(db_url: str, *applications: str) -> Iterator[None]:
    """What a PostgreSQL failover looks like to the services named (``application_name``): their connections
    drop, and the ones they open again land on a server that refuses writes (SQLSTATE 25006) until the block
    ends. Other connections (a lease's, the test's own) are left alone."""
    import psycopg

    name = urlsplit(db_url).path.lstrip("/")

    def switch(setting: str) -> None:
        with psycopg.connect(database_url(db_url, "postgres"), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" {setting}')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                         "AND application_name = ANY(%s) AND pid <> pg_backend_pid()", (name, list(applications)))

    switch("SET default_transaction_read_only = on")
    try:
        yield
    finally:
        switch("RESET default_transaction_read_only")


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A node of an ``EXPLAIN (FORMAT JSON)`` plan and every node below it, depth first."""
    return [node, *(n for child in node.get("Plans", []) for n in plan_nodes(child))]


def plan_scans(plan: dict[str, Any], relation: str) -> list[str]:
    """Node types of every scan of ``relation`` in an ``EXPLAIN (FORMAT JSON)`` plan tree."""
    return [n["Node Type"] for n in plan_nodes(plan)
            if n.get("Relation Name") == relation and n["Node Type"].endswith("Scan")]


def rows_read(plan: dict[str, Any], relation: str) -> int:
    """Rows the scans of ``relation`` in an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan returned or read and dropped, over
    all their loops (a write's own node left out)."""
    return sum(n["Actual Loops"] * (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) for n in plan_nodes(plan)
               if n.get("Relation Name") == relation and n["Node Type"] != "ModifyTable")


# The state of the g-th of a series of ended positions, for tests that fill ``positions`` with a history
ENDED_STATE_SQL = "(ARRAY['CLOSED', 'REDEEMED', 'RESOLVED_LOST'])[1 + {n} %% 3]"


def generic_plan_scans(db_url: str, sql: str, params: Any, relations: Sequence[str], *,
                       options: str = "") -> dict[str, list[str]]:
    """How a generic plan of ``sql`` (the kind a connection caches) made on the tables as they are now
    reaches each of ``relations``; ``options``: the connection's server settings."""
    import psycopg

    with psycopg.connect(db_url, options=options) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return {r: plan_scans(plan, r) for r in relations}


# The internal token of every service a test starts (services read it from INTERNAL_ENV, stand-ins and the
# test's own channels from INTERNAL): calls without it are refused, as in production.
INTERNAL_TOKEN = "1e" * 32
INTERNAL_ENV = {"TT_INTERNAL_TOKEN": INTERNAL_TOKEN}


def _internal() -> Any:
    from common.config import Secret
    from common.grpcauth import GrpcSecurity

    return GrpcSecurity((Secret(INTERNAL_TOKEN),))


INTERNAL = _internal()


def internal_channel(port: int) -> Any:
    """A grpc.aio channel to ``127.0.0.1:port`` whose calls carry the internal token."""
    from common.grpcclient import channel

    return channel(f"127.0.0.1:{port}", INTERNAL)


async def rpc_code(call: Any, timeout_s: float = 10.0) -> Any:
    """The status a gRPC call ends with: a unary call's, a stream's at its first message (OK once one arrives)."""
    import grpc

    try:
        async with asyncio.timeout(timeout_s):
            if isinstance(call, grpc.aio.UnaryStreamCall):
                await call.read()
            else:
                await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        call.cancel()
    return grpc.StatusCode.OK


def alerts_raised(redis_url: str, kind: str = "") -> list[Any]:
    """The alerts in ``tt:stream:alerts`` (of ``kind`` when given), oldest first."""
    import redis

    from common.alerts import ALERTS_STREAM, Alert

    client = redis.Redis.from_url(redis_url)
    try:
        found = [Alert.from_json(fields[b"a"]) for _id, fields in client.xrange(ALERTS_STREAM)]
    finally:
        client.close()
    return [a for a in found if not kind or a.kind == kind]


def with_tuning(settings_cls: type[S], **kw: Any) -> S:
    """``settings_cls(**kw)`` where the keywords that name a tuning constant go to its ``tuning`` instead."""
    import dataclasses

    tuning_cls = type(settings_cls.__dataclass_fields__["tuning"].default)  # type: ignore[attr-defined]
    names = {f.name for f in dataclasses.fields(tuning_cls)}
    tuned = {k: kw.pop(k) for k in list(kw) if k in names}
    return settings_cls(**kw, tuning=tuning_cls(**tuned))


def retuned(settings: S, **kw: Any) -> S:
    """``dataclasses.replace(settings, **kw)`` where the keywords that name a tuning constant replace it in
    ``settings.tuning``."""
    import dataclasses

    tuning = settings.tuning  # type: ignore[attr-defined]
    names = {f.name for f in dataclasses.fields(tuning)}
    tuned = {k: kw.pop(k) for k in list(kw) if k in names}
    return dataclasses.replace(settings, **kw, tuning=dataclasses.replace(tuning, **tuned))  # type: ignore[type-var]


def counter_sums(reader: Any) -> dict[str, Any]:
    """Each counter an OpenTelemetry ``InMemoryMetricReader`` holds: its description, unit, monotonic and temporality
    flags and {attributes: value}."""
    from opentelemetry.sdk.metrics.export import Sum

    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if isinstance(m.data, Sum):
                    out[m.name] = (m.description, m.unit, m.data.is_monotonic, m.data.aggregation_temporality,
                                   {tuple(sorted((p.attributes or {}).items())): p.value
                                    for p in m.data.data_points})
    return out
