"""Fuzzing the frame handlers: random bytes, truncated JSON, wrong types, 10^80 numbers, huge frames.

The loops never die and every bad frame or message is counted exactly once.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.books import BookState
from services.ingest.clob_feed import ClobHandler
from services.ingest.identity import Identified
from services.ingest.metrics import IngestMetrics
from services.ingest.rtds_feed import RtdsHandler
from sim.polymarket import PolymarketSim, SimTrade
from tests.helpers import eventually
from tests.ingest.conftest import RECV_NS, IngestFactory, follow
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
