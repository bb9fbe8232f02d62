"""Replay of a recorded capture (ingest's ``TT_RECORD_DIR`` JSON lines) or of raw venue messages.

Recorded lines keep their pace (scaled by ``speed``; 0 = as fast as possible): RTDS frames go to
RTDS subscribers verbatim, CLOB frames to every market-channel client, data-api bodies' rows into
the data-api store. Raw messages (a JSON array or JSON lines) are routed by shape.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import orjson

from sim.polymarket.venue import PolymarketSim


def load_capture(path: str | Path) -> list[Any]:
    """The items of a capture file: a JSON array's elements, or one item per JSON line (bad lines skipped)."""
    data = Path(path).read_bytes()
    try:
        whole = orjson.loads(data)
        return whole if isinstance(whole, list) else [whole]
    except orjson.JSONDecodeError:
        items = []
        for line in data.splitlines():
            if line.strip():
                try:
                    items.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return items


def _frame_text(item: dict[str, Any]) -> str | bytes:
    if "frame_b64" in item:
        return base64.b64decode(item["frame_b64"])
    frame = item.get("frame")
    return frame if isinstance(frame, str) else orjson.dumps(frame).decode()


def route(sim: PolymarketSim, item: Any) -> str:
    """Send one item where it belongs; returns the feed name ("" when unrecognised)."""
    if isinstance(item, dict) and "feed" in item and "t" in item:
        feed, raw = item["feed"], _frame_text(item)
        if feed == "rtds":
            for client in list(sim.rtds.clients):
                if client.subs and not sim.rtds.stalled:
                    client.send(raw)
        elif feed == "clob":
            if not sim.clob.stalled:
                sim.clob.send_raw(raw)
        elif feed == "data_api":
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return ""
            rows = body.get("data") if isinstance(body, dict) else body
            for row in rows if isinstance(rows, list) else []:
                if isinstance(row, dict):
                    sim.data.add_row(row)
        return str(feed)
    if isinstance(item, dict) and ("payload" in item or "topic" in item):
        text = orjson.dumps(item).decode()
        for client in list(sim.rtds.clients):
            if client.subs and not sim.rtds.stalled:
                client.send(text)
        return "rtds"
    if isinstance(item, dict) and ("proxyWallet" in item or "proxy_wallet" in item):
        sim.data.add_row(item)
        return "data_api"
    if isinstance(item, dict | list):
        sim.clob.send_raw(orjson.dumps(item).decode())
        return "clob"
    return ""


async def replay(sim: PolymarketSim, items: list[Any], *, speed: float = 1.0) -> int:
    """Replay every item in order; returns how many were routed."""
    start = time.monotonic()
    first_t: int | None = None
    routed = 0
    for item in items:
        t = item.get("t") if isinstance(item, dict) else None
        if speed > 0 and isinstance(t, int):
            first_t = t if first_t is None else first_t
            delay = start + (t - first_t) / 1e9 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if route(sim, item):
            routed += 1
    return routed
