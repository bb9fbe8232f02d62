"""The simulator's websocket sender on a real server and client: a burst queued at once goes out in
one write and still arrives frame by frame, in order, intact (text and binary, every length form)."""

from __future__ import annotations

import pytest
import websockets

from sim.polymarket.wsbase import WsServer, ws_frame
from tests.helpers import eventually


@pytest.mark.parametrize(("payload", "header"), [
    ("hi", b"\x81\x02"),
    ("x" * 125, b"\x81\x7d"),
    ("x" * 126, b"\x81\x7e\x00\x7e"),
    (b"\x00" * 65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_frame_headers(payload: str | bytes, header: bytes) -> None:
    framed = ws_frame(payload)
    assert framed.startswith(header) and len(framed) == len(header) + len(payload)


@pytest.mark.integration
async def test_a_queued_burst_arrives_frame_by_frame_in_order() -> None:
    server = WsServer()
    port = await server.start()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            await eventually(lambda: len(server.clients) == 1)
            client = next(iter(server.clients))
            burst: list[str | bytes] = [f"frame {i}" for i in range(500)]
            burst[7] = "y" * 300
            burst[42] = "z" * 70_000
            burst[99] = b"\x01\x02binary"
            for item in burst:
                client.send(item)  # all queued before the sender runs: one write
            got = [await ws.recv() for _ in burst]
            assert got == burst
            client.send("alone")  # a single frame takes the library's path
            assert await ws.recv() == "alone"
            await eventually(lambda: client.sent == len(burst) + 1)
    finally:
        await server.stop()
