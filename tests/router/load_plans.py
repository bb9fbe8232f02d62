"""LOAD's parameters as the store gives them, and its plans as the router's connection would run it (plan tests)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql as pgsql

from services.router.adapters.store import RouterStore
from services.router.adapters.store_sql import LOAD


async def load_params(**kw: Any) -> dict[str, Any]:
    """The parameters :meth:`RouterStore.load_batch` gives LOAD (``kw``: its keywords beyond a one-trade default)."""
    got: dict[str, Any] = {}

    async def capture(stmt: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        got.update(params)
        return (None,) * 9

    store = RouterStore(None)  # type: ignore[arg-type]
    store._hot_one = capture  # type: ignore[method-assign]
    base: dict[str, Any] = {"leader_trade_ids": ["lt_x"], "leader_assets": [], "pnl_day_ms": None,
                            "funding_wallets": []}
    await store.load_batch(**{**base, **kw})
    return got


def explain_load(db_url: str, params: dict[str, Any], options: str, *, generic: bool) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, FORMAT JSON)`` of LOAD: ``generic``, the plan the router's connection prepares and caches,
    else one made for the values."""
    names: list[str] = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", LOAD)))
    with psycopg.connect(db_url, options=options, autocommit=True) as conn:
        if not generic:
            row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + LOAD, params).fetchone()
        else:
            conn.execute("SET plan_cache_mode = force_generic_plan")
            conn.execute("PREPARE load_x AS " + re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}",
                                                       LOAD))
            row = conn.execute(pgsql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE load_x({})").format(
                pgsql.SQL(", ").join(pgsql.Literal(params[n]) for n in names))).fetchone()
    assert row is not None
    return row[0][0]["Plan"]
