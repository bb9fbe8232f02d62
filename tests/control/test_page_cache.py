"""Whole REST list pages kept with their rows' digest: the LRU (pure) and its freshness on real
PostgreSQL, including stats that change and change back."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg
import pytest

from services.control import sub_repo
from services.control.db import Database, create_pool
from services.control.page_cache import PageCache
from services.control.pagination import PageTokens
from services.control.sub_pages import SubscriptionPages, page_query
from tests.control.conftest import AUTH, FOLLOWER, Stubs, leader, subscription
from tests.control.support import execute
from tests.helpers import plan_scans
from tradingtools.control.v1 import control_pb2 as pb


def test_pages_are_bounded_by_bytes_least_recent_first() -> None:
    cache = PageCache(max_bytes=10)
    cache.put("a", "d1", b"aaaa")
    cache.put("b", "d2", b"bbbb")
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", "d3", b"cccc")  # 12 bytes: evicts b
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes == 8 and len(cache) == 2
    cache.put("a", "d4", b"A")  # replaced, not added
    kept = cache.get("a")
    assert kept is not None and (kept.digest, kept.body) == ("d4", b"A") and cache.bytes == 5
    cache.put("a", None, b"x")  # no digest (empty page): nothing kept, the old page dropped
    cache.put("big", "d5", b"x" * 11)  # larger than the whole cache
    assert cache.get("a") is None and cache.get("big") is None and cache.bytes == 4


def test_a_kept_page_is_gzipped_once_and_counted_in_the_bound() -> None:
    body = b'{"a":"' + b"x" * 1000 + b'"}'
    cache = PageCache(max_bytes=10_000)
    cache.put("a", "d1", body)
    page = cache.get("a")
    assert page is not None and page.gzipped is None and cache.bytes == len(body)
    packed = cache.gzipped("a", page)
    assert gzip.decompress(packed) == body
    kept = cache.get("a")
    assert kept is not None and kept.gzipped == packed and cache.bytes == len(body) + len(packed)
    assert cache.gzipped("a", kept) is packed  # not compressed again
    cache.put("a", "d2", b"{}")  # replaced: the old gzip goes with the old body
    assert cache.get("a").gzipped is None and cache.bytes == 2  # type: ignore[union-attr]
    assert gzip.decompress(cache.gzipped("a", page)) == body and cache.bytes == 2  # a stale page is not kept


def test_a_gzipped_page_that_outgrows_the_bound_evicts_the_oldest_first() -> None:
    cache = PageCache(max_bytes=2_100)
    old, new = bytes(range(256)) * 4, bytes(reversed(range(256))) * 4  # barely compressible
    cache.put("old", "d1", old)
    cache.put("new", "d2", new)
    page = cache.get("new")
    assert page is not None
    cache.gzipped("new", page)
    assert cache.get("old") is None and cache.get("new") is not None and cache.bytes <= 2_100


@pytest.mark.integration
async def test_a_page_read_unchanged_goes_out_gzipped_when_accepted(stubs: Stubs, pages: SubscriptionPages) -> None:
    await _create(stubs, 3)
    built = await pages.encoded_json(_query(), gzip_ok=True)
    assert built.encoding == ""  # just built: sent as it is
    kept = await pages.encoded_json(_query(), gzip_ok=True)
    assert kept.encoding == "gzip" and gzip.decompress(kept.data) == built.data
    assert (await pages.encoded_json(_query(), gzip_ok=True)).data is kept.data
    plain = await pages.encoded_json(_query(), gzip_ok=False)
    assert plain.encoding == "" and plain.data == built.data


@pytest.fixture
async def pages(control: Any, db_url: str) -> AsyncIterator[SubscriptionPages]:
    pool = await create_pool(db_url, max_size=2, acquire_timeout_s=2, statement_timeout_s=2)
    try:
        yield SubscriptionPages(Database(pool), cache_entries=100, page_cache_bytes=1 << 20)
    finally:
        await pool.close()


def _query(size: int = 500, token: str = "") -> Any:
    return page_query(follower_proxy=FOLLOWER, leader_proxy="", state=0, page_size=size, page_token=token,
                      tokens=PageTokens(b"k" * 32))


async def _create(stubs: Stubs, n: int, first: int = 1) -> list[str]:
    return [(await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(i))), metadata=AUTH)).id for i in range(first, first + n)]


def _stats(body: bytes) -> list[Any]:
    return [s.get("stats") for s in orjson.loads(body)["subscriptions"]]


@pytest.mark.integration
async def test_an_unchanged_page_is_answered_from_the_kept_bytes(stubs: Stubs, pages: SubscriptionPages) -> None:
    await _create(stubs, 3)
    first = await pages.json(_query())
    kept = pages.json_pages.get(_query())
    assert kept is not None and kept.body == first
    assert await pages.json(_query()) is kept.body


@pytest.mark.integration
async def test_stats_that_change_and_change_back_are_always_current(stubs: Stubs, pages: SubscriptionPages,
                                                                   db_url: str) -> None:
    ids = await _create(stubs, 2)
    before = await pages.json(_query())
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, exposure_usd, updated_at)"
            " VALUES (%s, 4, 3.5, now())", (ids[1],))
    changed = await pages.json(_query())
    assert _stats(changed)[1]["copied"] == "4" and _stats(changed)[1]["exposureUsd"] == "3.5"
    execute(db_url, "UPDATE subscription_stats SET copied = 5 WHERE subscription_id = %s", (ids[1],))
    assert _stats(await pages.json(_query()))[1]["copied"] == "5"
    execute(db_url, "UPDATE subscription_stats SET copied = 4 WHERE subscription_id = %s", (ids[1],))
    assert await pages.json(_query()) == changed  # back to an earlier state: that state's page
    execute(db_url, "DELETE FROM subscription_stats WHERE subscription_id = %s", (ids[1],))
    assert await pages.json(_query()) == before
    execute(db_url, "UPDATE subscriptions SET label = 'renamed', version = version + 1 WHERE id = %s", (ids[0],))
    assert orjson.loads(await pages.json(_query()))["subscriptions"][0]["label"] == "renamed"


@pytest.mark.integration
async def test_a_new_row_beyond_the_page_changes_its_token(stubs: Stubs, pages: SubscriptionPages) -> None:
    await _create(stubs, 2)
    assert orjson.loads(await pages.json(_query(size=2)))["nextPageToken"] == ""
    await _create(stubs, 1, first=3)
    assert orjson.loads(await pages.json(_query(size=2)))["nextPageToken"] != ""


@pytest.mark.integration
async def test_the_digest_read_alone_equals_the_one_read_with_the_rows(stubs: Stubs, pages: SubscriptionPages,
                                                                       db_url: str) -> None:
    ids = await _create(stubs, 5)
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, skipped, exposure_usd,"
            " realized_pnl_usd, unrealized_pnl_usd, updated_at) VALUES (%s, 9007199254740993, 2, 12.50, -1.250,"
            " 0.001, now())", (ids[2],))
    token = orjson.loads(await pages.json(_query(size=2)))["nextPageToken"]
    for q in (_query(), _query(size=2), _query(size=2, token=token)):
        args = {"follower_proxy": q.follower, "leader_proxy": q.leader, "state": q.state, "after": q.after,
                "limit": q.size + 1}
        async with pages.db.read() as conn:
            heads = await sub_repo.list_heads(conn, **args, with_digest=True)
            alone = await sub_repo.page_digest(conn, **args)
        assert alone is not None and {h[-1] for h in heads} == {alone}
    async with pages.db.read() as conn:
        assert await sub_repo.page_digest(conn, follower_proxy="0x" + "1" * 40, leader_proxy="", state="",
                                          after=None, limit=10) is None


def _loops_of_aggregates(plan: dict[str, Any]) -> list[int]:
    found = [plan["Actual Loops"]] if plan["Node Type"] == "Aggregate" else []
    for child in plan.get("Plans", []):
        found += _loops_of_aggregates(child)
    return found


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
async def test_the_digest_is_computed_once_per_page_whatever_the_plan(stubs: Stubs, pages: SubscriptionPages,
                                                                       mode: str) -> None:
    await _create(stubs, 30)  # no ANALYZE: the planner guesses, as it does for a table that just grew
    sql, params = sub_repo.heads_statement(follower_proxy=FOLLOWER, leader_proxy="", state="", after=None,
                                           limit=501)
    async with pages.db.read() as conn:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        row = await cur.fetchone()
        await conn.execute("RESET plan_cache_mode")
    assert row is not None
    assert _loops_of_aggregates(next(iter(row.values()))[0]["Plan"]) == [1]


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
async def test_a_page_looks_up_its_own_stats_rows_and_never_reads_the_whole_stats_table(
        stubs: Stubs, pages: SubscriptionPages, db_url: str, mode: str) -> None:
    ids = await _create(stubs, 20)
    # A full page of the follower's, and everyone else's stats: as a plain join, PostgreSQL hash-joined
    # the whole stats table into every page.
    execute(db_url, "INSERT INTO subscriptions SELECT (jsonb_populate_record(NULL::subscriptions, to_jsonb(s)"
            " || jsonb_build_object('id', s.id || '-' || g, 'follower_wallet_id', s.follower_wallet_id || '-' || g,"
            " 'create_time', s.create_time + g * interval '1 ms'))).* FROM subscriptions s, generate_series(1, 480) g"
            " WHERE s.id = %s", (ids[-1],))
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied) SELECT 'other-' || g, 1"
            " FROM generate_series(1, 20000) g")
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied) VALUES (%s, 7)", (ids[3],))
    execute(db_url, "ANALYZE subscriptions; ANALYZE subscription_stats")
    args = {"follower_proxy": FOLLOWER, "leader_proxy": "", "state": "", "after": None, "limit": 501}
    statements = {"digest": sub_repo.digest_statement(**args), "heads": sub_repo.heads_statement(**args),
                  "page": sub_repo.page_statement(**args)}
    async with pages.db.read() as conn:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        for name, (sql, params) in statements.items():
            row = await (await conn.execute("EXPLAIN (FORMAT JSON) " + sql, params)).fetchone()
            assert row is not None
            scans = plan_scans(next(iter(row.values()))[0]["Plan"], "subscription_stats")
            assert scans == ["Index Scan"], (name, scans)
        await conn.execute("RESET plan_cache_mode")
    assert _stats(await pages.json(_query()))[3]["copied"] == "7"


@pytest.mark.integration
async def test_a_page_digest_reads_the_follower_s_rows_from_the_index_alone_in_page_order(
        stubs: Stubs, pages: SubscriptionPages, db_url: str) -> None:
    await _create(stubs, 3)
    # 3,000 rows of other followers: without the page index's INCLUDE (version) the plan is already a bitmap heap
    # scan and a sort at this size, without the index a sequential scan
    execute(db_url, "INSERT INTO subscriptions SELECT (jsonb_populate_record(NULL::subscriptions, to_jsonb(s)"
            " || jsonb_build_object('id', s.id || '-' || g, 'follower_proxy', '0x' || lpad(to_hex(g), 40, '0'),"
            " 'follower_wallet_id', s.follower_wallet_id || '-' || g))).* FROM subscriptions s,"
            " generate_series(1, 1000) g WHERE s.follower_proxy = %s", (FOLLOWER,))
    with psycopg.connect(db_url, autocommit=True) as conn:  # autovacuum's work on a table grown by inserts
        conn.execute("VACUUM ANALYZE subscriptions")
    sql, params = sub_repo.digest_statement(follower_proxy=FOLLOWER, leader_proxy="", state="", after=None,
                                            limit=501)
    async with pages.db.read() as conn:
        row = await (await conn.execute("EXPLAIN (FORMAT JSON) " + sql, params)).fetchone()
    assert row is not None
    plan = next(iter(row.values()))[0]["Plan"]
    assert plan_scans(plan, "subscriptions") == ["Index Only Scan"]
    assert "Sort" not in orjson.dumps(plan).decode()


def test_a_page_that_changed_is_marked_until_a_build_finds_it_unchanged() -> None:
    cache = PageCache(max_bytes=100)
    cache.put("a", "d1", b"x")
    assert cache.get("a").changing is False  # type: ignore[union-attr]
    cache.put("a", "d2", b"y")
    assert cache.get("a").changing is True  # type: ignore[union-attr]
    cache.put("a", "d2", b"y")
    assert cache.get("a").changing is False  # type: ignore[union-attr]


@pytest.mark.integration
async def test_a_changing_page_is_built_without_a_digest_check_first(stubs: Stubs, pages: SubscriptionPages,
                                                                     db_url: str, monkeypatch: Any) -> None:
    ids = await _create(stubs, 2)
    checks: list[str | None] = []
    digest_of = sub_repo.page_digest

    async def counted(*args: Any, **kwargs: Any) -> str | None:
        checks.append(await digest_of(*args, **kwargs))
        return checks[-1]

    monkeypatch.setattr(sub_repo, "page_digest", counted)
    await pages.json(_query())  # built
    assert len(checks) == 0
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, updated_at) VALUES (%s, 1, now())",
            (ids[0],))
    assert _stats(await pages.json(_query()))[0]["copied"] == "1"  # checked, changed, rebuilt
    assert len(checks) == 1
    execute(db_url, "UPDATE subscription_stats SET copied = 2 WHERE subscription_id = %s", (ids[0],))
    assert _stats(await pages.json(_query()))[0]["copied"] == "2"  # changing: rebuilt without a check
    assert len(checks) == 1
    assert _stats(await pages.json(_query()))[0]["copied"] == "2"  # rebuilt, found unchanged
    assert len(checks) == 1
    kept = await pages.json(_query())  # stable again: checked and answered from the kept bytes
    assert len(checks) == 2 and kept is pages.json_pages.get(_query()).body  # type: ignore[union-attr]


@pytest.mark.integration
async def test_a_rebuild_reuses_the_unchanged_rows_and_equals_a_fresh_build(stubs: Stubs, pages: SubscriptionPages,
                                                                           db_url: str) -> None:
    ids = await _create(stubs, 5)
    await pages.json(_query())
    looked_up = pages.json_cache.hits + pages.json_cache.misses
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, exposure_usd, updated_at)"
            " VALUES (%s, 3, 12.50, now())", (ids[2],))
    execute(db_url, "UPDATE subscriptions SET label = 'renamed', version = version + 1 WHERE id = %s", (ids[4],))
    body = await pages.json(_query())
    assert pages.json_cache.hits + pages.json_cache.misses - looked_up == 2  # only the two changed rows
    fresh = SubscriptionPages(pages.db, cache_entries=100, page_cache_bytes=0)
    assert body == await fresh.json(_query())
    assert _stats(body)[2]["exposureUsd"] == "12.5" and orjson.loads(body)["subscriptions"][4]["label"] == "renamed"
