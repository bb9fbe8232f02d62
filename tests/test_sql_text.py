"""Statements stay short enough for psycopg to cache their parsing, and compact_sql keeps them valid."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

import common
import services
from common.storage import compact_sql
from services.router.adapters.store_sql import Prepared

_SQL = re.compile(r"^\s*(WITH|SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


def _statements() -> list[tuple[str, str, str]]:
    found = []
    for pkg in (common, services):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if isinstance(value, str) and _SQL.match(value):
                    found.append((info.name, name, value))
    return found


def test_the_scan_finds_the_hot_statements() -> None:
    names = {(m, n) for m, n, _ in _statements()}
    assert ("services.router.adapters.store_sql", "PERSIST") in names
    assert ("services.router.adapters.store_sql", "LOAD") in names


def _bare_prepared(module: str, name: str) -> bool:
    """Whether the statement runs as a bare prepared statement (``store_sql.Prepared``, ``NAME_PREPARED``): psycopg
    never parses it."""
    return isinstance(getattr(importlib.import_module(module), name + "_PREPARED", None), Prepared)


def test_every_statement_is_short_enough_for_psycopg_to_cache_its_parsing() -> None:
    too_long = [(m, n, len(sql)) for m, n, sql in _statements()
                if len(sql.encode()) > MAX_CACHED_STATEMENT_LENGTH and not _bare_prepared(m, n)]
    assert too_long == []


@pytest.mark.parametrize(("sql", "compact"), [
    ("SELECT 1", "SELECT 1"),
    ("\n  SELECT a,\n         b\n  FROM t\n\tWHERE x = %s\n", "SELECT a, b FROM t WHERE x = %s"),
    ("SELECT 'N' FROM t", "SELECT 'N' FROM t"),
])
def test_compact_sql_collapses_whitespace(sql: str, compact: str) -> None:
    assert compact_sql(sql) == compact


def test_compact_sql_refuses_a_line_comment() -> None:
    with pytest.raises(ValueError, match="comment"):
        compact_sql("SELECT 1 -- one\nFROM t")
