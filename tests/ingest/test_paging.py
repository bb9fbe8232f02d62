"""data-api paging inside one poll window (``restclient.DataApi`` + ``Poller.poll_leader``), against a fake
offset-paged list that changes between page requests as the live one does.

A poll counts occurrences over its whole response (``identity.identify_batch``), so a row that came back
on a second page was a second id for the same fill: a second copy. Pages therefore restart at the previous
page's last second instead of an offset; and a window never ends early (a clamped ``limit``, the offset cap)
while the cursor moves past it.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from common.restget import Page
from services.ingest.metrics import IngestMetrics
from services.ingest.poller import CURSOR_KEY, Poller
from services.ingest.restclient import DataApi
from services.ingest.targets import FollowedLeaders

LEADER = "0x72b4b094cdab7322f285fad576473aa3a2197eeb"
ASSET = "79191939610100241429039499950443680906623179487184628479206155805558220344190"
NOW = 1_790_000_000


def row(i: int, ts: int) -> dict[str, Any]:
    """A data-api /activity|/trades row (FORMATS §4.2/4.3 shape: numbers, lower-case wallet)."""
    return {"proxyWallet": LEADER, "timestamp": ts, "conditionId": "0x" + "d" * 64, "type": "TRADE",
            "size": 10 + i, "usdcSize": 4.3, "transactionHash": "0x%064x" % (i + 1), "price": 0.43,
            "asset": ASSET, "side": "BUY", "outcomeIndex": 1, "outcome": "No"}


class FakeRedis:
    def __init__(self, saved: int = NOW - 60) -> None:
        self.h: dict[str, dict[str, str]] = {CURSOR_KEY: {LEADER: str(saved)}}

    async def hget(self, key: str, field: str) -> str | None:
        return self.h.get(key, {}).get(field)

    async def hset(self, key: str, field: str, value: str) -> None:
        self.h.setdefault(key, {})[field] = value


class FakeSink:
    """The sink's contract: dedupe on id only (Lua seen-key)."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    async def submit(self, items: list[Any]) -> list[str | None]:
        out = []
        for it in items:
            if it.id in self.seen:
                out.append(None)
            else:
                self.seen[it.id] = it
                out.append(str(len(self.seen)))
        return out


class Server:
    """Offset-paged data-api list; ``between_pages`` mutates it after each page (live venue)."""

    def __init__(self, rows: list[dict[str, Any]], *, newest_first: bool, clamp: int = 10_000,
                 between_pages: Callable[[Server], None] | None = None, windows: bool = True) -> None:
        self.rows, self.newest_first, self.clamp, self.between_pages = rows, newest_first, clamp, between_pages
        self.windows = windows  # honours start / end
        self.calls = 0

    async def get(self, url: str, params: dict[str, Any]) -> Page:
        limit = min(int(params["limit"]), self.clamp)
        offset = int(params.get("offset", 0))
        rows = self.rows
        if self.windows and "start" in params:
            rows = [r for r in rows if params["start"] <= r["timestamp"] <= params["end"]]
        rows = sorted(rows, key=lambda r: r["timestamp"], reverse=self.newest_first)
        page = rows[offset:offset + limit]
        self.calls += 1
        if self.between_pages:
            self.between_pages(self)
        return Page(page, time.time_ns())


def run_poll(server: Server, *, endpoint: str, page_limit: int = 500, max_offset: int = 5000,
             saved: int = NOW - 60) -> tuple[FakeSink, FakeRedis]:
    sink, redis = FakeSink(), FakeRedis(saved)
    poller = Poller(DataApi(server, "https://data-api.polymarket.com", endpoint=endpoint, page_limit=page_limit,
                            max_offset=max_offset),
                    sink, FollowedLeaders({LEADER}), redis, IngestMetrics(), clock=lambda: float(NOW))
    asyncio.run(poller.poll_leader(LEADER))
    return sink, redis


def distinct_fills(sink: FakeSink) -> set[tuple[str, str]]:
    return {(it.fill.tx_hash, str(it.fill.size)) for it in sink.seen.values()}


def test_trades_endpoint_new_trade_between_pages_is_not_a_second_copy_of_an_old_fill() -> None:
    # 700 fills of a busy (market-making) leader in the window, newest first as /trades returns them.
    rows = [row(i, NOW - 150 + i // 5) for i in range(700)]
    added = []

    def leader_trades_again(srv: Server) -> None:  # the leader trades while we page (offsets shift by one)
        if srv.calls == 1:
            r = row(10_000, NOW)
            added.append(r)
            srv.rows.append(r)

    sink, _ = run_poll(Server(rows, newest_first=True, between_pages=leader_trades_again), endpoint="trades")
    ids_per_fill = len(sink.seen) - len(distinct_fills(sink))
    assert ids_per_fill == 0, f"{ids_per_fill} fill(s) emitted under two identities"


def test_activity_endpoint_late_indexed_row_between_pages_is_not_a_second_copy() -> None:
    # FORMATS §4.2: data-api lags 5-10 s, so a row can appear inside the already-read part of an ASC window.
    rows = [row(i, NOW - 100 + i // 10) for i in range(600)]

    def late_row(srv: Server) -> None:
        if srv.calls == 1:
            srv.rows.append(row(20_000, NOW - 100))

    sink, _ = run_poll(Server(rows, newest_first=False, between_pages=late_row), endpoint="activity")
    dup = len(sink.seen) - len(distinct_fills(sink))
    assert dup == 0, f"{dup} fill(s) emitted under two identities"


def test_activity_page_limit_above_server_clamp_does_not_truncate_the_window() -> None:
    # FORMATS §4.3: /activity `limit` <= 500 (clamped). Config allows TT_TUNE_INGEST_POLL_PAGE_LIMIT up to 10000.
    rows = [row(i, NOW - 100 + i // 10) for i in range(700)]
    sink, redis = run_poll(Server(rows, newest_first=False, clamp=500), endpoint="activity", page_limit=1000)
    assert len(sink.seen) == 700, f"only {len(sink.seen)} of 700 trades; cursor now {redis.h[CURSOR_KEY][LEADER]}"


def test_trades_endpoint_offset_cap_does_not_drop_the_oldest_trades_of_the_window() -> None:
    # FORMATS §4.2: /trades offset <= 10000; beyond that 'page with start/end windows instead'.
    # e.g. after an hour of ingest downtime the saved window is an hour old (max lookback is 24 h)
    rows = [row(i, NOW - 3000 + i // 3) for i in range(6000)]
    sink, redis = run_poll(Server(rows, newest_first=True), endpoint="trades", saved=NOW - 3600)
    assert len(sink.seen) == 6000, f"only {len(sink.seen)} of 6000; cursor advanced to {redis.h[CURSOR_KEY][LEADER]}"


def test_trades_from_a_server_that_ignores_the_window_are_read_once_each() -> None:
    rows = [row(i, NOW - 50 + i // 5) for i in range(230)]
    server = Server(rows, newest_first=True, windows=False)
    sink, _ = run_poll(server, endpoint="trades", page_limit=100)
    assert len(sink.seen) == len(distinct_fills(sink)) == 230


def test_trades_from_a_server_that_ignores_the_window_are_not_copied_twice_when_the_list_shifts() -> None:
    """Read by offset, a trade made between two later pages shifted the list by one: the row at the page edge came
    back as a second occurrence of its fill (a second trade id, a second copy). Once the server is seen ignoring
    the window, the window is read as one answer, which nothing can shift."""
    rows = [row(i, NOW - 50 + i // 5) for i in range(230)]

    def leader_trades_again(srv: Server) -> None:
        if srv.calls == 2:  # after the page that showed the window is ignored
            srv.rows.append(row(10_000, NOW))

    sink, _ = run_poll(Server(rows, newest_first=True, windows=False, between_pages=leader_trades_again),
                       endpoint="trades", page_limit=100)
    assert len(sink.seen) - len(distinct_fills(sink)) == 0
    assert len(distinct_fills(sink)) >= 230  # none of the window's fills lost


def test_trades_read_again_as_one_answer_keep_the_rows_of_the_narrowed_window() -> None:
    """The first page narrowed the window's end before the second showed the server ignores it: the rows of the
    first page (newer than the narrowed end) are read again, not dropped."""
    rows = [row(i, NOW - 50 + i // 5) for i in range(230)]
    server = Server(rows, newest_first=True, windows=False)
    sink, _ = run_poll(server, endpoint="trades", page_limit=100)
    assert {it.fill.tx_hash for it in sink.seen.values()} == {r["transactionHash"] for r in rows}


def test_a_whole_page_inside_one_second_is_paged_by_offset() -> None:
    rows = [row(i, NOW - 30) for i in range(120)] + [row(1000 + i, NOW - 20 + i // 50) for i in range(100)]
    for endpoint, newest_first in (("activity", False), ("trades", True)):
        sink, _ = run_poll(Server(list(rows), newest_first=newest_first), endpoint=endpoint, page_limit=50)
        assert len(sink.seen) == len(distinct_fills(sink)) == 220, endpoint


def test_a_leader_followed_again_is_never_polled_from_before_it_was() -> None:
    """Its saved window dates from before a pause: the trades of the pause must not be fetched."""
    rows = [row(i, NOW - 3000 + i) for i in range(3000)]
    sink, redis = FakeSink(), FakeRedis(saved=NOW - 3600)
    poller = Poller(DataApi(Server(rows, newest_first=False), "https://data-api.polymarket.com"),
                    sink, FollowedLeaders({LEADER}), redis, IngestMetrics(), clock=lambda: float(NOW))
    poller.on_new_leader(LEADER, NOW - 30)
    asyncio.run(poller.poll_leader(LEADER))  # a regular poll, from the saved window
    assert min(it.fill.venue_time_ms for it in sink.seen.values()) >= (NOW - 30) * 1000
    assert len(sink.seen) == 30
