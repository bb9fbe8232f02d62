"""Fuzzing the feed parsers: random bytes, truncated JSON, wrong types, 10^80 numbers, huge frames, and
property-based malformed frames of every feed (RTDS, the CLOB market channel, data-api pages, CLOB REST ``/book``
and ``/markets``): the loops never die and every bad frame or message is counted exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.ingest.books import BookState
from services.ingest.clob_feed import ClobHandler
from services.ingest.identity import Identified
from services.ingest.metrics import IngestMetrics
from services.ingest.rtds_feed import RtdsHandler
from sim.polymarket import PolymarketSim, SimTrade
from tests.helpers import eventually
from tests.ingest import fuzzframes as fz
from tests.ingest.conftest import RECV_NS, IngestFactory, follow
from tests.ingest.fuzz_rest import RestHarness
from tests.ingest.test_identity import sim_trade

LEADER = "0x5a1ce0000000000000000000000000000000beef"


def good_frame(trade: SimTrade | None = None) -> dict[str, Any]:
    t = trade or sim_trade()
    return {"connection_id": "x", "payload": t.rtds_payload(), "timestamp": 1, "topic": "activity", "type": "trades"}


WRONG = [None, True, [], {}, [1, 2], {"a": 1}, "", "NaN", "Infinity", -1, 0, 10**80, 1e80, "1" + "0" * 80, 1e-80,
         "0x", "\u0000", "1e999"]
FIELDS = ["asset", "proxyWallet", "transactionHash", "side", "price", "size", "timestamp", "outcomeIndex",
          "conditionId", "title"]


def bad_frames(rng: random.Random, max_bytes: int) -> list[str | bytes]:
    """Frames that must each produce exactly one parse error (with an accept-all filter)."""
    frames: list[str | bytes] = []
    text = orjson.dumps(good_frame()).decode()
    for _ in range(30):
        frames.append(b"\x01" + rng.randbytes(rng.randrange(1, 300)))  # random bytes
        frames.append(text[: rng.randrange(1, len(text) - 1)])  # truncated JSON
    for field in FIELDS:
        for value in WRONG:
            frame = good_frame()
            frame["payload"][field] = value
            raw = json.dumps(frame).replace('"1e999"', "1e999")  # json writes 10**80 as an integer literal
            frames.append(raw)
    frames += ["42", '"just a string"', "[1, 2]", '{"topic": "activity", "type": "trades", "payload": 7}',
               '{"topic": "activity", "type": "trades"}', "x" * (max_bytes + 1), "[" * 100_000]
    return frames


def expected_errors(frames: list[str | bytes], max_bytes: int) -> int:
    """Each bad frame counts once, except arrays of n bad elements which count n."""
    total = 0
    for f in frames:
        try:
            data = orjson.loads(f) if len(f) <= max_bytes else None
        except orjson.JSONDecodeError:
            data = None
        total += len(data) if isinstance(data, list) else 1
    return total


def handler(metrics: IngestMetrics, out: list[Identified], max_bytes: int = 4096) -> RtdsHandler:
    return RtdsHandler(lambda _w: True, out.append, metrics, max_frame_bytes=max_bytes)


def test_every_bad_frame_is_counted_and_good_ones_still_flow() -> None:
    metrics, out = IngestMetrics(), []
    h = handler(metrics, out)
    frames = bad_frames(random.Random(3), 4096)
    # some wrong values are valid after all (e.g. title "" or outcomeIndex 0): drop those from the bad set
    probe = IngestMetrics()
    frames = [f for f in frames if not _accepted(f, probe)]
    for f in frames:
        assert h.handle(f, RECV_NS) is True
    assert metrics.total("parse_errors", "rtds") == expected_errors(frames, 4096)
    assert out == []
    h.handle(orjson.dumps(good_frame()), RECV_NS)
    assert len(out) == 1


def _accepted(frame: str | bytes, metrics: IngestMetrics) -> bool:
    got: list[Identified] = []
    handler(metrics, got).handle(frame, RECV_NS)
    return bool(got)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    metrics = IngestMetrics()
    handler(metrics, []).handle(data, 0)
    ClobHandler(BookState(), lambda _t, _n: None, metrics).handle(data, 0)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children) | st.dictionaries(st.text(), children),
                           max_leaves=12)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from([*FIELDS, "event_type", "price_changes", "bids", "asks", "asset_id"]),
                       json_values))
def test_random_json_shapes_never_raise(payload: dict[str, Any]) -> None:
    metrics = IngestMetrics()
    frame = json.dumps({"topic": "activity", "type": "trades", "payload": payload})
    handler(metrics, []).handle(frame, 0)
    books = BookState()
    books.track(str(payload.get("asset_id")))
    ClobHandler(books, lambda _t, _n: None, metrics).handle(json.dumps({**payload, "event_type": "book"}), 0)
    ClobHandler(books, lambda _t, _n: None, metrics).handle(
        json.dumps({**payload, "event_type": "price_change"}), 0)


@pytest.mark.integration
async def test_fuzzed_websocket_keeps_the_loop_alive(sim: PolymarketSim, run_ingest: IngestFactory,
                                                    redis_url: str) -> None:
    await follow(redis_url, LEADER)
    max_bytes = 64 * 1024
    app = await run_ingest(max_frame_bytes=max_bytes, rtds_stall_s=30.0)
    await sim.rtds.wait_subscribed()
    frames = [f for f in bad_frames(random.Random(5), max_bytes) if not _accepted(f, IngestMetrics())]
    reference = IngestMetrics()  # the same frames through a handler with the same target filter
    ref = RtdsHandler(lambda w: w == LEADER, lambda _i: None, reference, max_frame_bytes=max_bytes)
    for frame in frames:
        ref.handle(frame, 0)
    assert reference.total("parse_errors") + reference.total("filtered") == expected_errors(frames, max_bytes)
    for frame in frames:
        sim.rtds.send_raw(frame)
    trade = sim_trade(tx="0x" + "9" * 64)
    sim.rtds.send_raw(orjson.dumps(good_frame(trade)).decode())
    await eventually(lambda: app.metrics.count("kept", "RTDS_TRADES") == 1)
    assert app.metrics.total("parse_errors", "rtds") == reference.total("parse_errors")
    assert app.metrics.total("filtered") == reference.total("filtered")
    assert app.metrics.count("reconnects", "rtds") == 0

    # a frame beyond what the socket accepts at all (16× the limit) closes it: counted, reconnected
    sim.rtds.send_raw("y" * (max_bytes * 16 + 1))
    await eventually(lambda: app.metrics.count("reconnects", "rtds") == 1)
    await sim.rtds.wait_subscribed()
    sim.rtds.send_raw(orjson.dumps(good_frame(sim_trade(tx="0x" + "8" * 64))).decode())
    await eventually(lambda: app.metrics.count("kept", "RTDS_TRADES") == 2)
    too_large = reference.count("parse_errors", "rtds", "TOO_LARGE")
    assert too_large >= 2 and app.metrics.count("parse_errors", "rtds", "TOO_LARGE") == too_large + 1


# --- Feed fuzzing: every parser, malformed frames by construction, each refused and counted ----------------------
#
# ``TT_FUZZ_FRAMES`` frames in all (default 2,000: seconds; ``make fuzz`` runs 100,000), shared out among the
# feeds: RTDS frames, CLOB market-channel frames, data-api pages, CLOB REST ``/book`` and ``/markets`` bodies.
# Each frame goes through the production handler (the REST ones through the real HTTP client, the poller and the
# market sync, against a real HTTP server on loopback); the handler must not raise, must accept nothing,
# and its ``ingest.parse_errors`` count must grow by exactly the case's refused messages.

FUZZ_FRAMES = int(os.environ.get("TT_FUZZ_FRAMES", "2000"))
SHARES = {"rtds": 0.3, "clob": 0.3, "data_api": 0.2, "clob_rest_book": 0.1, "clob_rest_markets": 0.1}
BATCH = 10  # frames per example: Hypothesis' own cost per example is most of a frame's
TRIED: Counter[str] = Counter()
REFUSED: Counter[str] = Counter()  # messages refused (a frame may hold several)
HOWS: Counter[tuple[str, str]] = Counter()


def budget(feed: str) -> Any:
    return settings(max_examples=max(1, round(FUZZ_FRAMES * SHARES[feed] / BATCH)), deadline=None,
                    phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))


def batches(cases: st.SearchStrategy[fz.Case]) -> st.SearchStrategy[list[fz.Case]]:
    return st.lists(cases, min_size=BATCH, max_size=BATCH)


@pytest.fixture(scope="module", autouse=True)
def fuzz_report() -> Iterator[None]:
    """Quiet the refusal logs while fuzzing; print (and with ``TT_FUZZ_REPORT``, write) what was tried."""
    quiet = logging.getLogger("services.ingest")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    started = time.monotonic()
    yield
    quiet.setLevel(level)
    if TRIED:
        report = {"frames": sum(TRIED.values()), "by_feed": dict(TRIED), "crashes": 0, "uncounted": 0,
                  "messages_refused_and_counted": sum(REFUSED.values()),
                  "seconds": round(time.monotonic() - started, 1),
                  "by_shape": {f"{feed}/{how}": n for (feed, how), n in sorted(HOWS.items())}}
        print(f"\nfeed fuzz: {orjson.dumps(report).decode()}")
        if os.environ.get("TT_FUZZ_REPORT"):
            Path(os.environ["TT_FUZZ_REPORT"]).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def tried(feed: str, case: fz.Case) -> None:
    TRIED[feed] += 1
    REFUSED[feed] += case.refused
    HOWS[feed, case.how] += 1


FUZZ_METRICS = IngestMetrics()
FUZZ_TRADES: list[Identified] = []
FUZZ_RTDS = RtdsHandler(lambda _w: True, FUZZ_TRADES.append, FUZZ_METRICS, max_frame_bytes=fz.MAX_FRAME_BYTES)
FUZZ_BOOKS = BookState()
for _asset in fz.CLOB_ASSETS:
    FUZZ_BOOKS.track(_asset)
FUZZ_CLOB = ClobHandler(FUZZ_BOOKS, lambda _t, _n: None, FUZZ_METRICS, max_frame_bytes=fz.MAX_FRAME_BYTES)


@budget("rtds")
@given(batches(fz.RTDS_FRAMES))
def test_feed_fuzz_rtds_frames(cases: list[fz.Case]) -> None:
    for case in cases:
        before = FUZZ_METRICS.total("parse_errors", "rtds")
        assert FUZZ_RTDS.handle(case.raw, RECV_NS) is True
        assert FUZZ_METRICS.total("parse_errors", "rtds") - before == case.refused, case
        assert FUZZ_TRADES == [], case
        tried("rtds", case)


@budget("clob")
@given(batches(fz.CLOB_FRAMES))
def test_feed_fuzz_clob_market_frames(cases: list[fz.Case]) -> None:
    for case in cases:
        before = FUZZ_METRICS.total("parse_errors", "clob")
        assert FUZZ_CLOB.handle(case.raw, RECV_NS) is True
        assert FUZZ_METRICS.total("parse_errors", "clob") - before == case.refused, case
        tried("clob", case)














@pytest.fixture(scope="module")
def rest() -> Iterator[RestHarness]:
    harness = RestHarness()
    yield harness
    harness.close()


@pytest.mark.integration  # the REST cases go through a real HTTP server
@budget("data_api")
@given(cases=batches(fz.data_pages()))
def test_feed_fuzz_data_api_pages(rest: RestHarness, cases: list[fz.Case]) -> None:
    leader = fz.ROW["proxyWallet"]
    for case in cases:
        before = rest.metrics.total("parse_errors", "data_api")
        rest.run(case.raw, lambda: rest.poller.poll_once(leader, RECV_NS / 1e9 - 60))
        assert rest.metrics.total("parse_errors", "data_api") - before == case.refused, case
        assert rest.sink.items == [], case
        tried("data_api", case)


@pytest.mark.integration  # the REST cases go through a real HTTP server
@budget("clob_rest_book")
@given(cases=batches(fz.rest_bodies(fz.REST_BOOK_BODY)))
def test_feed_fuzz_clob_rest_book_bodies(rest: RestHarness, cases: list[fz.Case]) -> None:
    asset = fz.REST_BOOK["asset_id"]
    for case in cases:
        before = rest.metrics.total("parse_errors", "clob_rest")
        assert rest.run(case.raw, lambda: rest.sync.fetch("book", asset)) is False
        assert rest.metrics.total("parse_errors", "clob_rest") - before == case.refused, case
        assert not rest.books.books[asset].synced, case
        tried("clob_rest_book", case)


@pytest.mark.integration  # the REST cases go through a real HTTP server
@budget("clob_rest_markets")
@given(cases=batches(fz.rest_bodies(fz.REST_MARKET_BODY)))
def test_feed_fuzz_clob_rest_market_bodies(rest: RestHarness, cases: list[fz.Case]) -> None:
    for case in cases:
        before, writes = rest.metrics.total("parse_errors", "clob_rest"), rest.redis.writes
        assert rest.run(case.raw, lambda: rest.sync.fetch("market", fz.REST_MARKET["condition_id"])) is False
        assert rest.metrics.total("parse_errors", "clob_rest") - before == case.refused, case
        assert rest.redis.writes == writes, case  # no market info from a body that was refused
        tried("clob_rest_markets", case)


@pytest.mark.integration
def test_the_rest_harness_accepts_the_valid_bodies(rest: RestHarness) -> None:
    """The fuzzed REST paths do accept the bodies they start from (a refusal is the body's, not the harness's)."""
    leader = fz.ROW["proxyWallet"]
    assert rest.run(orjson.dumps([fz.ROW]), lambda: rest.poller.poll_once(leader, RECV_NS / 1e9 - 60)) == 0
    assert len(rest.sink.items) == 1
    rest.sink.items.clear()
    assert rest.run(orjson.dumps(fz.REST_MARKET), lambda: rest.sync.fetch("market", fz.REST_MARKET["condition_id"]))
    asset = fz.REST_BOOK["asset_id"]
    assert rest.run(orjson.dumps(fz.REST_BOOK), lambda: rest.sync.fetch("book", asset))
    assert rest.books.books[asset].synced
    rest.books.desync_all()


@pytest.mark.integration
def test_a_cursor_that_repeats_is_a_bad_page_not_an_endless_window(rest: RestHarness) -> None:
    """A v2 page whose next cursor is the one it was asked with would be paged forever: counted, polled later."""
    before, requests = rest.metrics.count("parse_errors", "data_api", "BAD_FIELD"), rest.served.requests
    body = orjson.dumps({"data": [], "pagination": {"has_more": True, "next_cursor": "c1"}})
    leader = fz.ROW["proxyWallet"]
    assert rest.run(body, lambda: asyncio.wait_for(rest.poller.poll_once(leader, RECV_NS / 1e9 - 60), 5)) is None
    assert rest.metrics.count("parse_errors", "data_api", "BAD_FIELD") == before + 1
    assert rest.served.requests == requests + 2  # the first page, then the one that repeats its cursor
