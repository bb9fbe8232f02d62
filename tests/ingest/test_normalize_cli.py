"""``python -m services.ingest normalize FILE`` on our fixtures, captures and recordings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from services.ingest.identity import OccurrenceCounter, identify
from services.ingest.metrics import IngestMetrics
from services.ingest.recorder import Recorder
from services.ingest.rtds_feed import RtdsHandler
from tests.ingest.conftest import RECV_NS

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def normalize(path: Path, *extra: str) -> tuple[list[dict[str, object]], str, int]:
    proc = subprocess.run([sys.executable, "-m", "services.ingest", "normalize", str(path), *extra], cwd=ROOT,
                          capture_output=True, timeout=60)
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    return lines, proc.stderr.decode(), proc.returncode


def write_lines(path: Path, items: list[object]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(i) for i in items) + b"\n")
    return path


def fixture(name: str) -> object:
    return orjson.loads((FIXTURES / name).read_bytes())


def test_json_lines_across_feeds_in_input_order_with_dedupe(tmp_path: Path) -> None:
    items = [fixture("rtds_trade_buy_taker_fee.json"), fixture("rtds_trade_sell_maker.json"),
             fixture("rtds_orders_matched_taker.json"),  # the taker again, other RTDS type: same trade
             fixture("clob_book.json"), fixture("clob_array_frame.json"),  # no trades in CLOB frames
             *fixture("data_activity_mixed.json")]  # type: ignore[misc]
    lines, stderr, code = normalize(write_lines(tmp_path / "mixed.jsonl", items))
    assert code == 0, stderr
    assert [(x["wallet"], x["side"], x["size"], x["source"]) for x in lines] == [
        ("0x5a1ce0000000000000000000000000000000beef", "SIDE_BUY", "48.25", "FEED_SOURCE_RTDS_TRADES"),
        ("0x00000000000000000000000000000000000c0ffe", "SIDE_SELL", "48.25", "FEED_SOURCE_RTDS_TRADES"),
    ]  # the data-api TRADE row is the same fill as the first RTDS one; MERGE/REDEEM... are not trades
    first = lines[0]
    assert first["id"].startswith("lt_") and first["assetId"].isdigit() and first["fee"] == "0.4172"
    assert first["venueTimeMs"] == "1767225600000" and first["notionalUsd"] == "29.915"


def test_same_tx_identical_fills_stay_two(tmp_path: Path) -> None:
    lines, _, _ = normalize(FIXTURES / "rtds_array_same_tx_two_fills.json")
    assert [x["occurrence"] for x in lines] == [0, 1] and lines[0]["id"] != lines[1]["id"]
    lines, _, _ = normalize(FIXTURES / "data_trades_same_tx.json")
    assert [x["occurrence"] for x in lines] == [0, 1, 0, 0] and len({x["id"] for x in lines}) == 4


def test_activity_flag_prints_non_trade_rows(tmp_path: Path) -> None:
    lines, _, _ = normalize(FIXTURES / "data_activity_mixed.json", "--activity")
    assert [x["activityType"] for x in lines] == ["ACTIVITY_TYPE_TRADE", "ACTIVITY_TYPE_MERGE",
                                                  "ACTIVITY_TYPE_REDEEM", "ACTIVITY_TYPE_CONVERSION",
                                                  "ACTIVITY_TYPE_OTHER"]
    assert all(x["id"].startswith("la_") for x in lines[1:])


def test_bad_lines_are_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"oops": \n' + orjson.dumps(fixture("rtds_trade_buy_taker_fee.json")) + b"\nPONG\n")
    lines, stderr, code = normalize(path)
    assert code == 0 and len(lines) == 1
    assert orjson.loads(stderr.strip().splitlines()[-1])["parse_errors"] == {"file/NOT_JSON": 2}


def test_missing_file_exits_2(tmp_path: Path) -> None:
    _, stderr, code = normalize(tmp_path / "nope.json")
    assert code == 2 and "cannot read" in stderr


def test_recorded_frames_normalize_like_the_live_handler(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    live: list[object] = []
    handler = RtdsHandler(lambda _w: True, live.append, IngestMetrics())
    frames = [orjson.dumps(fixture("rtds_array_same_tx_two_fills.json")).decode(), "",
              orjson.dumps(fixture("rtds_trade_buy_taker_fee.json")).decode(), b"\xff\x00binary"]
    for n, frame in enumerate(frames):
        rec.write("rtds", frame, RECV_NS + n)
        handler.handle(frame, RECV_NS + n)
    rec.write("data_api", orjson.dumps(fixture("data_trades_same_tx.json")), RECV_NS + 2_000,
              {"url": "http://x/activity", "status": 200})
    rec.close()
    lines, _, code = normalize(rec.path)
    assert code == 0
    assert [x["id"] for x in lines[:3]] == [i.id for i in live]  # type: ignore[attr-defined]
    assert lines[0]["receivedTimeNs"] == str(RECV_NS)
    # data-api rows of the response: the two identical fills are the same as RTDS's, the others new
    assert len(lines) == 3 + 2
    assert identify(live[0].fill, OccurrenceCounter(), 0).id == lines[0]["id"]  # type: ignore[attr-defined]
