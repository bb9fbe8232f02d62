"""``python -m services.ingest normalize FILE``: what ingest makes of captured frames, as JSON lines.

FILE holds a JSON array or JSON lines of raw messages: RTDS frames, data-api rows or responses
(v1 arrays, v2 ``{data, pagination}`` envelopes), CLOB market messages (validated, no trades), or
lines written by the recorder (``TT_RECORD_DIR``). Every trade is printed, followed or not, once
(the same trade on two feeds is one), in input order, as the proto3 JSON of its
``LeaderTradeEvent``. Occurrences are counted as live: per RTDS type over the file, per data-api
response for responses, and over the file for loose data-api rows. ``--activity`` also prints
non-trade rows (REDEEM, MERGE...). A summary of skipped input goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson
from google.protobuf import json_format

from services.ingest import clob, dataapi
from services.ingest.events import leader_trade_event
from services.ingest.frames import decode, require_object
from services.ingest.identity import Identified, OccurrenceCounter, identify, identify_batch
from services.ingest.metrics import IngestMetrics
from services.ingest.model import DATA_API, ParseError
from services.ingest.recorder import envelope_frame, is_envelope
from services.ingest.rtds_feed import RtdsHandler


class _BadLine:
    def __init__(self, lineno: int) -> None:
        self.lineno = lineno


def iter_messages(data: bytes) -> Iterator[Any]:
    """Messages of a JSON document (array elements, or the object) or of JSON lines."""
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError:
        for lineno, line in enumerate(data.splitlines(), 1):
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield _BadLine(lineno)
        return
    if isinstance(whole, list):
        yield from whole
    else:
        yield whole


class Normalizer:
    """Feeds messages through the live parsing and identity code, collecting events in order."""

    def __init__(self, *, include_activity: bool = False) -> None:
        self.metrics = IngestMetrics()
        self.include_activity = include_activity
        self.events: list[Identified] = []
        self._seen: set[str] = set()
        self._rows = OccurrenceCounter(ttl_s=float("inf"), max_keys=10**9)
        self.rtds = RtdsHandler(lambda _w: True, self._emit, self.metrics, max_frame_bytes=64 << 20,
                                occurrence_ttl_s=float("inf"))
        self.skipped = 0
        self.started_ns = time.time_ns()

    def _emit(self, item: Identified) -> None:
        if item.id in self._seen:
            return
        self._seen.add(item.id)
        if item.fill.is_trade or self.include_activity:
            self.events.append(item)

    def _error(self, feed: str, kind: str) -> None:
        self.metrics.parse_error(feed, kind)

    def feed(self, msg: Any, recv_ns: int = 0) -> None:
        """One message of any supported kind (received at ``recv_ns``; unknown (0): when the run started, which
        is what a trade's timestamp is judged against)."""
        recv_ns = recv_ns or self.started_ns
        if isinstance(msg, _BadLine):
            self._error("file", "NOT_JSON")
        elif is_envelope(msg):
            self._envelope(msg)
        elif isinstance(msg, list):
            if msg and all(isinstance(r, dict) and dataapi.is_row(r) for r in msg):
                self._response(msg, recv_ns)
            else:
                for item in msg:
                    self.feed(item, recv_ns)
        elif not isinstance(msg, dict):
            self._error("file", "BAD_SHAPE")
        elif "payload" in msg or "topic" in msg or set(msg) == {"message"}:
            try:
                self.rtds.message(msg, recv_ns)
            except ParseError as exc:
                self._error("rtds", exc.kind)
        elif dataapi.is_row(msg):
            self._rows_in([msg], recv_ns, self._rows)
        elif "data" in msg and "pagination" in msg:
            self._response(msg, recv_ns)
        elif "event_type" in msg:
            try:
                clob.parse_event(msg)
            except ParseError as exc:
                self._error("clob", exc.kind)
        else:
            self.skipped += 1

    def _envelope(self, msg: dict[str, Any]) -> None:
        recv_ns = int(msg.get("t") or 0) or self.started_ns
        feed, raw = msg.get("feed"), envelope_frame(msg)
        if feed == "rtds":
            self.rtds.handle(raw, recv_ns)
        elif feed == "data_api":
            try:
                self._response(orjson.loads(raw), recv_ns)
            except orjson.JSONDecodeError:
                self._error("data_api", "NOT_JSON")
        elif feed == "clob":
            try:
                for item in decode(raw, 64 << 20) or []:
                    clob.parse_event(require_object(item))
            except ParseError as exc:
                self._error("clob", exc.kind)
        else:
            self.skipped += 1

    def _response(self, body: Any, recv_ns: int) -> None:
        try:
            rows = dataapi.rows_of(body)
        except ParseError as exc:
            self._error("data_api", exc.kind)
            return
        self._rows_in(rows, recv_ns, None)

    def _rows_in(self, rows: list[Any], recv_ns: int, counter: OccurrenceCounter | None) -> None:
        fills = []
        for row in rows:
            try:
                fills.append(dataapi.parse_row(require_object(row), recv_ns, DATA_API))
            except ParseError as exc:
                self._error("data_api", exc.kind)
        items = identify_batch(fills, recv_ns / 1e9) if counter is None else \
            [identify(f, counter, recv_ns / 1e9) for f in fills]
        for item in items:
            self._emit(item)


def write_events(events: list[Identified], out: TextIO) -> None:
    """Proto3 JSON, one event per line."""
    for item in events:
        as_dict = json_format.MessageToDict(leader_trade_event(item), always_print_fields_with_no_presence=True)
        out.write(orjson.dumps(as_dict).decode() + "\n")


def main(argv: list[str]) -> int:
    """Entry point of the ``normalize`` command."""
    parser = argparse.ArgumentParser(prog="python -m services.ingest normalize",
                                     description="Print the LeaderTradeEvents ingest makes of captured frames.")
    parser.add_argument("file", help="JSON array or JSON lines of RTDS / data-api / CLOB messages ('-' = stdin)")
    parser.add_argument("--activity", action="store_true", help="also print non-trade activity rows")
    args = parser.parse_args(argv)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"normalize: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    normalizer = Normalizer(include_activity=args.activity)
    for msg in iter_messages(data):
        normalizer.feed(msg)
    write_events(normalizer.events, sys.stdout)
    errors = {"/".join(k[1:]): v for k, v in normalizer.metrics.tally.items() if k[0] == "parse_errors"}
    if errors or normalizer.skipped:
        print(orjson.dumps({"skipped_unknown": normalizer.skipped, "parse_errors": errors}).decode(),
              file=sys.stderr)
    return 0
