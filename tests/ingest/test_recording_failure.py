"""The optional frame recorder (``TT_RECORD_DIR``) failing (a full disk) never costs a leader trade.

It writes inside the RTDS socket's read callback before the frame is handled and inside every data-api GET, and
flushes in a task of its own: an OSError there dropped the frame and the socket, failed every poll and ended the
service. Now the first failure is logged, counted (``ingest.recording_failures``) and turns recording off.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.ingest.recorder import Recorder
from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory, follow
from tests.ingest.streamutil import logged_trades
from tests.ingest.test_gauges import collected

LEADER = "0x" + "ab" * 20


def full_disk(recorder: Recorder, *, buffered: bool) -> None:
    """From now on every write reaching the disk fails with ENOSPC."""
    old = recorder._file
    recorder._file = open("/dev/full", "wb", buffering=(1 << 16) if buffered else 0)  # noqa: SIM115
    assert old is not None
    old.close()


def test_a_write_to_a_full_disk_turns_recording_off_and_is_counted_once(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    rec = Recorder(tmp_path, meter=MeterProvider(metric_readers=[reader]).get_meter("t"))
    rec.write("rtds", "{}", 1)
    full_disk(rec, buffered=False)
    for i in range(3):
        rec.write("rtds", f'{{"n": {i}}}', 2)  # never raises
    assert not rec.recording and rec.failures == 1 and rec.lines == 1
    [failures] = collected(reader)["ingest.recording_failures"]
    assert failures.value == 1
    rec.close()


def test_a_failed_flush_turns_recording_off(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    full_disk(rec, buffered=True)
    rec.write("data_api", b"[]", 1, {"url": "https://data-api.polymarket.com/activity", "status": 200})
    rec.flush()  # never raises
    rec.write("rtds", "{}", 2)
    rec.close()
    assert not rec.recording and rec.failures == 1


def test_a_directory_that_cannot_be_made_leaves_recording_off(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    rec = Recorder(tmp_path / "file" / "rec")  # never raises
    rec.write("rtds", "{}", 1)
    rec.close()
    assert not rec.recording and rec.failures == 1


@pytest.mark.integration
async def test_a_full_recording_disk_does_not_lose_leader_trades(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, tmp_path: Path) -> None:
    await follow(redis_url, LEADER)
    app = await run_ingest(record_dir=str(tmp_path / "rec"), poll_interval_s=0.5, rtds_stall_s=60.0)
    await sim.rtds.wait_subscribed()
    await eventually(lambda: app.poller.polls >= 1)
    assert app.recorder is not None
    full_disk(app.recorder, buffered=False)

    market = sim.add_market()
    trade = sim.trade(LEADER, market=market)  # RTDS and data-api

    async def logged() -> bool:
        return [e.tx_hash for e in await logged_trades(redis_url)] == [trade.tx_hash]
    try:
        await eventually(logged, timeout_s=6)
    except AssertionError:
        raise AssertionError(f"the leader trade was never logged: rtds sessions {app.rtds.connections} (socket "
                             f"dropped on each frame), polls done {app.poller.polls} (every GET fails)") from None
    assert app.recorder.failures == 1 and not app.recorder.recording
    assert app.rtds.connections == 1  # the socket was not dropped
    assert [t for t in app.tasks if t.done() and not t.cancelled() and t.exception()] == []  # the service runs on
