"""Raw frame recording to JSON lines (``TT_RECORD_DIR``) for replay and ``normalize``.

One line per frame or REST body: ``{"t": <receive ns>, "feed": "rtds"|"clob"|"data_api"|"clob_rest",
"frame": "<raw text>"}`` plus ``"url"``/``"status"`` for REST bodies; binary frames that are not
UTF-8 are stored as ``"frame_b64"``.

Recording is diagnostic and runs inside the feeds' read callbacks and every REST GET: it never raises. The first
failure to open, write or flush (a full disk) is logged, counted in ``ingest.recording_failures`` and turns
recording off for the rest of the process; the feeds go on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger(__name__)

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

    def __init__(self, directory: str | Path, *, flush_s: float = 1.0, meter: Any | None = None) -> None:
        self.dir = Path(directory)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.path = self.dir / f"ingest-{stamp}-{os.getpid()}.jsonl"
        self.flush_s = flush_s
        self.lines = 0
        self.failures = 0
        (meter or metrics.get_meter("tradingtools.ingest")).create_observable_counter(
            "ingest.recording_failures", callbacks=[self._observe],
            description="frame recording failures (TT_RECORD_DIR); the first turns recording off")
        self._file: IO[bytes] | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab", buffering=1 << 16)  # noqa: SIM115 - long-lived
        except OSError as exc:
            self._fail(exc)

    @property
    def recording(self) -> bool:
        """False once a failure turned recording off."""
        return self._file is not None

    def write(self, feed: str, raw: str | bytes, recv_ns: int, meta: dict[str, Any] | None = None) -> None:
        """Record one raw frame; never raises."""
        if self._file is None:
            return
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
        try:
            self._file.write(orjson.dumps(line) + b"\n")
        except (OSError, orjson.JSONEncodeError) as exc:
            self._fail(exc)
            return
        self.lines += 1

    def flush(self) -> None:
        """Write out what is buffered; never raises."""
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    async def run(self) -> None:
        """Flush periodically until cancelled (or recording is off)."""
        try:
            while self._file is not None:
                await asyncio.sleep(self.flush_s)
                self.flush()
        finally:
            self.close()

    def close(self) -> None:
        """Flush and close; never raises."""
        file, self._file = self._file, None
        if file is not None and not file.closed:
            try:
                file.close()
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """Count the failure and turn recording off (logged once: nothing is written after it)."""
        self.failures += 1
        file, self._file = self._file, None
        log.error("frame recording failed; recording is off", extra={"path": str(self.path), "error": repr(exc)[:300]})
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()  # drops what is buffered: a full disk takes none of it

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.failures)
