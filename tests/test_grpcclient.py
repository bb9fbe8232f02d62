"""Keepalive between the services: a stream whose server stopped answering fails instead of hanging, and a
quiet stream on a live connection is left open (servers accept the pings)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from common.grpcclient import channel
from tests.grpc_peer import start_quiet
from tests.helpers import INTERNAL
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def peer() -> Iterator[subprocess.Popen[str]]:
    """The quiet IngestService in a process of its own (so that it can be stopped)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.grpc_peer"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=10)


async def test_a_stream_from_a_server_that_stopped_answering_fails_with_unavailable(
        peer: subprocess.Popen[str]) -> None:
    assert peer.stdout is not None
    port = int(await asyncio.to_thread(peer.stdout.readline))
    ch = channel(f"127.0.0.1:{port}", INTERNAL, keepalive_s=0.5, keepalive_timeout_s=0.5)
    try:
        call = mgrpc.IngestServiceStub(ch).StreamLeaderTrades(mpb.StreamLeaderTradesRequest())
        assert (await call.read()).cursor == "1"
        os.kill(peer.pid, signal.SIGSTOP)  # its kernel still acknowledges, nothing answers the pings
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async with asyncio.timeout(20):  # without keepalive (and its ping timeout) the read waits forever
                await call.read()
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await ch.close()


async def test_a_quiet_stream_on_a_live_connection_stays_open_through_many_pings() -> None:
    srv = await start_quiet()
    ch = channel(f"127.0.0.1:{srv.port}", INTERNAL, keepalive_s=0.2, keepalive_timeout_s=1.0)
    try:
        call = mgrpc.IngestServiceStub(ch).StreamLeaderTrades(mpb.StreamLeaderTradesRequest())
        assert (await call.read()).cursor == "1"
        reading = asyncio.ensure_future(call.read())
        done, _ = await asyncio.wait({reading}, timeout=3)  # a server refusing pings would end it (too_many_pings)
        assert not done and not call.done()
        reading.cancel()
    finally:
        await ch.close()
        await srv.stop(0)

