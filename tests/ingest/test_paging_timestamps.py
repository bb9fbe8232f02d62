"""A data-api row whose ``timestamp`` cannot be read decides nothing about a window's paging.

Read as 0, one such row on a ``/trades`` page ended the window after that page: its older pages were never asked
for, yet the poll succeeded and saved its cursor past them. The row itself goes to the parser, which counts and
drops it (docs/polymarket-formats.md "Input that cannot be used").
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from common.restget import Page
from services.ingest.metrics import IngestMetrics
from services.ingest.poller import CURSOR_KEY, Poller
from services.ingest.restclient import DataApi
from services.ingest.targets import FollowedLeaders
from tests.ingest.test_paging import LEADER, NOW, FakeRedis, FakeSink, Server, row


def poll(server: Any, *, endpoint: str, max_offset: int = 5000) -> tuple[FakeSink, FakeRedis, IngestMetrics]:
    sink, redis, metrics = FakeSink(), FakeRedis(NOW - 60), IngestMetrics()
    poller = Poller(DataApi(server, "https://data-api.polymarket.com", endpoint=endpoint, page_limit=500,
                            max_offset=max_offset),
                    sink, FollowedLeaders({LEADER}), redis, metrics, clock=lambda: float(NOW))
    asyncio.run(poller.poll_leader(LEADER))
    return sink, redis, metrics


class HiddenStampServer(Server):
    """The venue sorts and windows by its own time (``_t`` here) but sends some rows with a broken timestamp."""

    async def get(self, url: str, params: dict[str, Any]) -> Page:  # type: ignore[override]
        def at(r: dict[str, Any]) -> int:
            return int(r.get("_t", r["timestamp"]))
        rows = [r for r in self.rows if params["start"] <= at(r) <= params["end"]]
        rows = sorted(rows, key=at, reverse=self.newest_first)
        offset, limit = int(params.get("offset", 0)), int(params["limit"])
        self.calls += 1
        return Page(rows[offset:offset + limit], time.time_ns())


def test_trades_window_with_one_bad_timestamp_still_reads_its_older_pages() -> None:
    rows: list[dict[str, Any]] = [row(i, NOW - 100 + i // 10) for i in range(700)]
    rows[650]["timestamp"] = None  # newest-first: row 650 lands on the first page

    class LenientServer(Server):  # the bad row sorts as newest (the fake's sort needs a number)
        async def get(self, url: str, params: dict[str, Any]) -> Page:  # type: ignore[override]
            bad = [r for r in self.rows if r["timestamp"] is None]
            good = [r for r in self.rows if r["timestamp"] is not None]
            self.rows = good
            try:
                page = await super().get(url, params)
            finally:
                self.rows = good + bad
            if int(params.get("offset", 0)) == 0 and params["end"] >= NOW - 100 + 69:
                page.body = bad + page.body[:-1]  # the bad row rides on the first page
            return page

    server = LenientServer(rows, newest_first=True)
    sink, redis, _ = poll(server, endpoint="trades")
    got = {it.fill.tx_hash for it in sink.seen.values()}
    want = {r["transactionHash"] for r in rows if r["timestamp"] is not None}
    assert redis.h[CURSOR_KEY][LEADER] == str(NOW + 1)  # the window counts as done
    assert want - got == set(), f"{len(want - got)} good trades of the window never read (server calls: {server.calls})"


def test_trades_rows_with_unreadable_timestamps_are_counted_and_dropped_not_a_window_end() -> None:
    rows: list[dict[str, Any]] = [row(i, NOW - 100 + i // 10) for i in range(700)]
    for i, bad in ((650, None), (640, "soon"), (630, True)):
        rows[i]["_t"], rows[i]["timestamp"] = rows[i]["timestamp"], bad
    sink, redis, metrics = poll(HiddenStampServer(rows, newest_first=True), endpoint="trades")
    assert {it.fill.tx_hash for it in sink.seen.values()} == {r["transactionHash"] for r in rows if "_t" not in r}
    assert metrics.total("parse_errors", "data_api") >= 3
    assert redis.h[CURSOR_KEY][LEADER] == str(NOW + 1)


def test_activity_page_ending_in_an_unreadable_timestamp_pages_on_by_time_not_into_the_offset_cap() -> None:
    rows: list[dict[str, Any]] = [row(i, NOW - 100 + i // 20) for i in range(1500)]
    rows[499]["_t"], rows[499]["timestamp"] = rows[499]["timestamp"], None  # the last row of the first page
    sink, _, _ = poll(HiddenStampServer(rows, newest_first=False), endpoint="activity", max_offset=500)
    assert len(sink.seen) == 1499
