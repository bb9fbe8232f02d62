"""Session fixtures: real PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL are set)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from common.embedded import start_postgres, start_redis, stop_pid, stop_postgres
from common.storage import apply_migrations
from tests.helpers import database_url, template_database

pytest_plugins = ("pytester", "tests.integration_guard")

TEMPLATE_DB = "tt_test_template"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real PostgreSQL server for the whole session."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    pgdata = Path(tmp_path_factory.mktemp("pg")) / "data"
    url = start_postgres(pgdata)
    try:
        yield url
    finally:
        stop_postgres(pgdata)


@pytest.fixture(scope="session")
def pg_template(pg_server_url: str) -> str:
    """Name of a template database with every migration applied."""
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    apply_migrations(database_url(pg_server_url, TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture
def db_url(pg_server_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with template_database(pg_server_url, pg_template, f"tt_test_{os.getpid()}_{next(_db_counter)}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis server for the whole session."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    url, pid = start_redis(Path(tmp_path_factory.mktemp("redis")), durable=False)
    try:
        yield url
    finally:
        stop_pid(pid)


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The session Redis, flushed for this test."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    return redis_server_url


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A text-mode client of the session Redis (flushed for this test)."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()
