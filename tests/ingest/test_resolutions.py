"""Market resolutions through the simulated venue (socket ``market_resolved`` and CLOB REST ``/markets``), on real
PostgreSQL, Redis and gRPC: emitted once, whichever source saw it first; durable across a failed append."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from common.fastredis import FastRedis
from common.marketstate import MarketInfo, read_market, write_market
from common.retry import Backoff
from services.ingest import resolution as rs
from services.ingest.metrics import IngestMetrics
from services.router.adapters.redis_state import RedisState
from services.router.domain.filters import trade_gate
from services.router.domain.model import Reason
from services.router.read_model import market_rules
from sim.polymarket import PolymarketSim
from tests.helpers import alerts_raised, eventually
from tests.ingest.conftest import IngestFactory
from tests.ingest.resolution_support import AppendFails, hold, logged, market_known, rows, served, watch
from tests.ingest.streamutil import logged_ticks
from tests.router.factories import policy, trade
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration
FAST = Backoff(0.1, 0.5)


def resolved_ticks(ticks: list[mpb.PriceTick]) -> list[tuple[str, str]]:
    return sorted((t.asset_id, t.winning_asset_id) for t in ticks if t.kind == mpb.TICK_KIND_MARKET_RESOLVED)


async def test_socket_resolution_is_emitted_once_served_and_confirmed_by_rest(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market(neg_risk=True, slug="will-it-resolve")
    yes, no = m.tokens
    await watch(r, yes, no)
    app = await run_ingest()
    await eventually(lambda: market_known(r, yes, m.condition_id))
    sim.resolve(m, no)  # socket frame and REST at once

    [item] = await served(app.grpc.port, 1)
    res = item.resolution
    assert (res.condition_id, list(res.asset_ids), res.winning_asset_id, res.winning_outcome) == (
        m.condition_id, [yes, no], no, "No")
    assert (res.source, res.confirmed, res.neg_risk, res.market_slug) == (
        mpb.RESOLUTION_SOURCE_CLOB_SOCKET, False, True, "will-it-resolve")
    assert res.venue_time_ms > 0 and res.received_time_ns > 0 and res.trace.traceparent.startswith("00-")

    # REST is asked at once and confirms the same winner: nothing more is emitted, the check is done
    await eventually(lambda: app.metrics.count("resolutions", "CLOB_REST", "DUPLICATE") == 1)

    async def checks_done() -> bool:
        return await rows(db_url, "market_checks") == []
    await eventually(checks_done)
    # the socket path's ticks were the book state's (one per watched token); none added by the resolution
    assert resolved_ticks(await logged_ticks(redis_url)) == sorted([(yes, no), (no, no)])
    sim.books.resolve(m.condition_id, [yes, no], no, "No")  # the socket says it again
    await eventually(lambda: app.metrics.count("resolutions", "CLOB_SOCKET", "DUPLICATE") == 1)
    assert [e for _c, e in await logged(redis_url)] == [res]
    [row] = await rows(db_url, "market_resolutions")
    assert (row["appended_cursor"], row["source"], row["confirmed"], row["winning_asset_id"]) == (
        item.cursor, "CLOB_SOCKET", False, no)
    assert row["asset_ids"] == [yes, no] and mpb.MarketResolution.FromString(row["payload"]) == res

    # the market info is closed for every token, and stays closed through a lagging REST refresh (the router's)
    for asset in (yes, no):
        info = await read_market(r, asset)
        assert info is not None and info.closed and not info.accepting_orders and info.resolved_winner == no
    stale = await read_market(r, yes)
    assert stale is not None
    await write_market(r, MarketInfo(yes, m.condition_id, stale.tick_size, stale.min_order_size))  # closed=False
    fast = FastRedis(redis_url)
    view = await RedisState(fast, "tt:stream:routed_trades", marker_ttl_s=60, stream_maxlen=1000).read_batch(
        [], [yes], {})
    fast.close()
    rules = market_rules(view.markets[yes])
    assert rules is not None and rules.closed
    gate = trade_gate(trade(asset_id=yes, condition_id=m.condition_id), rules, policy())
    assert gate is not None and gate[0] == Reason.MARKET_CLOSED
    await r.aclose()


async def test_rest_only_resolution_is_found_by_the_safety_net(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market(end_date_iso="2026-01-01T00:00:00Z")
    yes, no = m.tokens
    await hold(db_url, m.condition_id, yes)
    await watch(r, yes, no)  # for the socket frames sent afterwards
    app = await run_ingest(market_check_interval_s=1.0)

    async def checked_open() -> bool:
        got = await rows(db_url, "market_checks")
        return len(got) == 1 and got[0]["checked_at"] is not None
    await eventually(checked_open)
    [check] = await rows(db_url, "market_checks")
    assert check["end_date"] == datetime(2026, 1, 1, tzinfo=UTC) and not check["closed"]
    assert await rows(db_url, "market_resolutions") == []

    sim.resolve(m, yes, socket=False)  # no socket event ever
    [item] = await served(app.grpc.port, 1)
    res = item.resolution
    assert (res.source, res.confirmed, res.winning_asset_id, list(res.asset_ids), res.winning_outcome) == (
        mpb.RESOLUTION_SOURCE_CLOB_REST, True, yes, [yes, no], "Yes")

    # ticks for guard (the socket path did not send any), closed market info, the check is done
    async def ticks() -> list[tuple[str, str]]:
        return resolved_ticks(await logged_ticks(redis_url))
    assert await eventually(ticks) == sorted([(yes, yes), (no, yes)])
    for asset in (yes, no):
        info = await read_market(r, asset)
        assert info is not None and info.closed and info.resolved_winner == yes
    await eventually(lambda: app.metrics.count("market_checks", "RESOLVED") == 1)
    assert await rows(db_url, "market_checks") == []  # done; not scheduled again while the position is held

    # the socket seen second: the same winner changes nothing, another winner is logged and counted, not applied
    sim.books.resolve(m.condition_id, [yes, no], yes, "Yes")
    await eventually(lambda: app.metrics.count("resolutions", "CLOB_SOCKET", "DUPLICATE") == 1)
    sim.books.resolve(m.condition_id, [yes, no], no, "No")
    await eventually(lambda: app.metrics.count("resolutions", "CLOB_SOCKET", "CONTRADICTED") == 1)
    assert [e for _c, e in await logged(redis_url)] == [res]
    [row] = await rows(db_url, "market_resolutions")
    assert (row["winning_asset_id"], row["source"], row["confirmed"]) == (yes, "CLOB_REST", True)
    await r.aclose()


async def test_a_held_market_is_checked_within_a_minute_after_its_end(
        sim: PolymarketSim, run_ingest: IngestFactory, db_url: str) -> None:
    end_s = int(time.time()) + 120
    m = sim.add_market(end_date_iso=datetime.fromtimestamp(end_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    await hold(db_url, m.condition_id, m.tokens[1])
    await run_ingest()

    async def checked() -> list[dict[str, object]]:
        return [c for c in await rows(db_url, "market_checks") if c["checked_at"] is not None]
    [check] = await eventually(checked)
    assert check["next_check_at"].timestamp() == end_s + rs.GRACE_AFTER_END_S
    assert (check["failures"], check["last_error"]) == (0, "")


async def test_a_socket_resolution_without_a_winner_waits_for_rest(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market()
    yes, no = m.tokens
    await watch(r, yes, no)
    app = await run_ingest()
    app.market_checks.awaiting = FAST
    await eventually(lambda: market_known(r, yes, m.condition_id))
    asked = f"/markets/{m.condition_id}"
    before = sim.clob.rest_requests.count(asked)
    sim.resolve(m, no, socket_winner=False, rest_delay_s=2.0)  # REST reports it later

    await eventually(lambda: app.metrics.count("resolutions", "CLOB_SOCKET", "NO_CLEAR_WINNER") == 1)
    info = await read_market(r, yes)  # closed for copying at once, resolved by nobody yet
    assert info is not None and info.closed and info.resolved_winner == ""
    await eventually(lambda: sim.clob.rest_requests.count(asked) >= before + 2)  # asked at once, then again
    recorded = await rows(db_url, "market_resolutions")
    assert not recorded or m.closed  # nothing recorded before REST said it

    [item] = await served(app.grpc.port, 1)
    assert (item.resolution.source, item.resolution.confirmed, item.resolution.winning_asset_id) == (
        mpb.RESOLUTION_SOURCE_CLOB_REST, True, no)
    assert m.closed
    # the socket's ticks had no winner; REST's carry it, for every token
    ticks = resolved_ticks(await logged_ticks(redis_url))
    assert sorted(t for t in ticks if t[1]) == sorted([(yes, no), (no, no)])
    assert len(await logged(redis_url)) == 1
    await r.aclose()


async def test_contradicting_rest_after_a_socket_resolution_is_logged_not_applied(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market()
    yes, no = m.tokens
    await watch(r, yes, no)
    app = await run_ingest()
    await eventually(lambda: market_known(r, yes, m.condition_id))
    sim.clob.resolve(m, no, socket=False)  # REST says No...
    sim.books.resolve(m.condition_id, [yes, no], yes, "Yes")  # ...the socket says Yes, and comes first

    [item] = await served(app.grpc.port, 1)
    assert (item.resolution.winning_asset_id, item.resolution.source) == (yes, mpb.RESOLUTION_SOURCE_CLOB_SOCKET)
    await eventually(lambda: app.metrics.count("resolutions", "CLOB_REST", "CONTRADICTED") == 1)
    [check] = await rows(db_url, "market_checks")  # kept for an operator, checked again hourly
    assert check["closed"] and check["last_error"].startswith("CONTRADICTS_RECORDED_RESOLUTION")
    assert check["next_check_at"].timestamp() > time.time() + 3000
    [row] = await rows(db_url, "market_resolutions")
    assert row["winning_asset_id"] == yes and len(await logged(redis_url)) == 1
    # the settlement may have paid the wrong side: a person has to look, at once
    [alert] = await eventually(lambda: alerts_raised(redis_url, "RESOLUTION_CONTRADICTED"))
    assert (alert.fields["condition_id"], alert.fields["recorded_winner"], alert.fields["other_winner"],
            alert.severity) == (m.condition_id, yes, no, "CRITICAL")
    await r.aclose()


def test_contradicted_resolutions_are_exported_from_the_start() -> None:
    """The alerting rule reads ``ingest_resolutions_total{outcome="CONTRADICTED"}``: a counter that appears only
    with its first contradiction has no increase to alert on."""
    tally = IngestMetrics().tally
    assert all(("resolutions", source, rs.CONTRADICTED) in tally for source in (rs.SOCKET, rs.REST))


async def test_a_failed_append_is_recovered_by_the_sweep_after_a_restart(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market()
    yes, no = m.tokens
    await watch(r, yes, no)
    first = await run_ingest()
    failing = AppendFails(first.resolutions_log)
    first.resolutions.log = failing  # type: ignore[assignment]
    await eventually(lambda: market_known(r, yes, m.condition_id))
    sim.resolve(m, yes)

    async def recorded() -> list[dict[str, object]]:
        return await rows(db_url, "market_resolutions")
    [row] = await eventually(recorded)
    await eventually(lambda: failing.calls >= 2)  # the live append and the sweep's retry both failed
    assert row["appended_cursor"] is None and await logged(redis_url) == []
    await first.stop(grace_s=0.1)  # the process dies with the resolution recorded, not appended

    second = await run_ingest()
    [item] = await served(second.grpc.port, 1)
    assert item.resolution.winning_asset_id == yes
    assert item.resolution == mpb.MarketResolution.FromString(row["payload"])  # type: ignore[arg-type]

    async def cursor_recorded() -> bool:
        [row] = await rows(db_url, "market_resolutions")
        return row["appended_cursor"] == item.cursor
    await eventually(cursor_recorded)
    assert len(await logged(redis_url)) == 1
    await r.aclose()


async def test_an_append_that_reached_redis_is_not_appended_again(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market()
    yes, no = m.tokens
    await watch(r, yes, no)
    app = await run_ingest()
    app.resolutions.log = AppendFails(app.resolutions_log, after_xadd=True)  # type: ignore[assignment]
    await eventually(lambda: market_known(r, yes, m.condition_id))
    sim.resolve(m, yes)

    async def appended() -> list[dict[str, object]]:
        return [x for x in await rows(db_url, "market_resolutions") if x["appended_cursor"]]
    [row] = await eventually(appended)  # the sweep found the entry in the log and only recorded its cursor
    [(cursor, event)] = await logged(redis_url)
    assert row["appended_cursor"] == cursor and event.winning_asset_id == yes
    await r.aclose()


async def test_malformed_or_failed_rest_answers_change_nothing(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market()
    yes, no = m.tokens
    other = sim.add_market()
    lookalike = {**m.rest(), "closed": True, "condition_id": other.condition_id,
                 "tokens": [{"token_id": yes, "outcome": "Yes", "winner": True, "price": 1},
                            {"token_id": no, "outcome": "No", "winner": False, "price": 0}]}
    answers = [(200, "not json"), (200, lookalike), (200, {**lookalike, "condition_id": m.condition_id,
                                                           "closed": "true"}),
               (200, []), (200, {**lookalike, "condition_id": m.condition_id, "tokens": "none"}),
               (500, {"error": "boom"}), (404, {"error": "market not found"}), (502, "<html>bad gateway</html>")]
    for status, body in answers:
        sim.clob.answer_market_next(m.condition_id, status, body)
    app = await run_ingest(market_check_interval_s=1.0)
    app.market_checks.failing = FAST
    await hold(db_url, m.condition_id, yes)
    app.market_checks.refresh()


    async def failing() -> bool:  # recorded on the schedule while it lasts (backing off)
        return any(c["failures"] >= 3 and c["last_error"] for c in await rows(db_url, "market_checks"))
    await eventually(failing, timeout_s=20)
    await eventually(lambda: app.metrics.total("market_checks") >= len(answers), timeout_s=20)
    assert (app.metrics.count("market_checks", "MALFORMED"), app.metrics.count("market_checks", "FAILED")) == (5, 3)
    assert await rows(db_url, "market_resolutions") == [] and await read_market(r, yes) is None
    [check] = await rows(db_url, "market_checks")
    assert not check["closed"]

    sim.resolve(m, yes, socket=False)  # the next good answer resolves it
    [item] = await served(app.grpc.port, 1)
    assert (item.resolution.winning_asset_id, item.resolution.source) == (yes, mpb.RESOLUTION_SOURCE_CLOB_REST)
    await r.aclose()


async def test_market_resolved_for_an_unwatched_asset_is_ignored_and_counted(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    watched = sim.add_market()
    await watch(r, watched.tokens[0])
    app = await run_ingest()
    await eventually(lambda: sim.clob.clients and all(watched.tokens[0] in c.subs for c in sim.clob.clients))
    stranger = sim.add_market()
    sim.clob.send_raw(orjson.dumps({
        "event_type": "market_resolved", "market": stranger.condition_id, "assets_ids": list(stranger.tokens),
        "winning_asset_id": stranger.tokens[0], "winning_outcome": "Yes", "timestamp": "1767225600800"}).decode())
    await eventually(lambda: app.metrics.count("resolutions", "CLOB_SOCKET", "UNWATCHED") == 1)
    assert app.metrics.total("parse_errors") == 0
    assert await rows(db_url, "market_resolutions") == [] and await rows(db_url, "market_checks") == []
    assert f"/markets/{stranger.condition_id}" not in sim.clob.rest_requests
    await r.aclose()


async def test_a_market_closed_without_a_winner_for_long_raises_one_alert(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    m = sim.add_market()
    yes, _no = m.tokens
    await hold(db_url, m.condition_id, yes, size="10")
    m.closed, m.accepting_orders = True, False  # a 50/50 or voided result: closed, no token is the winner
    app = await run_ingest(market_check_interval_s=1.0, resolution_unclear_alert_s=1.0)
    app.market_checks.awaiting = FAST

    def unclear() -> list[Any]:
        return alerts_raised(redis_url, "RESOLUTION_UNCLEAR")
    [alert] = await eventually(unclear)
    assert (alert.fields["condition_id"], alert.fields["positions"], alert.fields["wallets"]) == (
        m.condition_id, "1", "1")
    [check] = await rows(db_url, "market_checks")
    assert check["unclear_since"] is not None and check["unclear_alerted_at"] is not None
    assert await rows(db_url, "market_resolutions") == []  # nothing is applied on the venue's silence
    assert app.metrics.count("unclear") == 1  # what the alerting rule reads

    checks = app.market_checks.checks
    await eventually(lambda: app.market_checks.checks >= checks + 3)  # checked again and again: alerted once
    assert len(unclear()) == 1

    m.winner = yes  # the venue names a winner at last: settled as usual
    [item] = await served(app.grpc.port, 1)
    assert item.resolution.winning_asset_id == yes
    assert len(unclear()) == 1
