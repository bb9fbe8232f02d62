"""Raw frame recording to JSON lines (``TT_RECORD_DIR``) for replay and ``normalize``.

One line per frame or REST body: ``{"t": <receive ns>, "feed": "rtds"|"clob"|"data_api"|"clob_rest",
"frame": "<raw text>"}`` plus ``"url"``/``"status"`` for REST bodies; binary frames that are not
UTF-8 are stored as ``"frame_b64"``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import IO, Any

import orjson

ENVELOPE_KEYS = ("t", "feed")


def is_envelope(msg: Any) -> bool:
    """True for a recorded line (as opposed to a raw venue message)."""
    return isinstance(msg, dict) and "feed" in msg and "t" in msg and ("frame" in msg or "frame_b64" in msg)


def envelope_frame(msg: dict[str, Any]) -> str | bytes:
    """The raw frame of a recorded line."""
    if "frame_b64" in msg:
        return base64.b64decode(msg["frame_b64"])
    frame = msg["frame"]
    return frame if isinstance(frame, str) else orjson.dumps(frame).decode()


class Recorder:
    """Appends raw frames to ``<dir>/ingest-<utc>-<pid>.jsonl``; flushed every ``flush_s``."""

    def __init__(self, directory: str | Path, *, flush_s: float = 1.0) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.path = self.dir / f"ingest-{stamp}-{os.getpid()}.jsonl"
        self._file: IO[bytes] = open(self.path, "ab", buffering=1 << 16)  # noqa: SIM115 - long-lived
        self.flush_s = flush_s
        self.lines = 0

    def write(self, feed: str, raw: str | bytes, recv_ns: int, meta: dict[str, Any] | None = None) -> None:
        """Record one raw frame."""
        line: dict[str, Any] = {"t": recv_ns, "feed": feed}
        if isinstance(raw, bytes):
            try:
                line["frame"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                line["frame_b64"] = base64.b64encode(raw).decode()
        else:
            line["frame"] = raw
        if meta:
            line.update(meta)
        self._file.write(orjson.dumps(line) + b"\n")
        self.lines += 1

    async def run(self) -> None:
        """Flush periodically until cancelled."""
        try:
            while True:
                await asyncio.sleep(self.flush_s)
                self._file.flush()
        finally:
            self.close()

    def close(self) -> None:
        """Flush and close."""
        if not self._file.closed:
            self._file.flush()
            self._file.close()
