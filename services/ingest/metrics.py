"""Ingest metrics: an in-process tally exported as OpenTelemetry observable counters, plus histograms.

The hot path (2,000+ frames/s) only increments a ``Counter``; the OpenTelemetry SDK reads the tally
through callbacks at collection time, so a frame costs no SDK call. Names (attributes):
``ingest.frames`` (feed), ``ingest.parse_errors`` (feed, kind), ``ingest.trades.kept`` /
``.filtered`` / ``.duplicate`` (source), ``ingest.activity`` (type), ``ingest.reconnects`` (feed),
``ingest.stalls`` (feed), ``ingest.backfilled``, ``ingest.ticks`` (kind), ``ingest.poll.requests``
(status), ``ingest.resolutions`` (source, outcome), ``ingest.market_checks`` (outcome),
``ingest.held_token_lookups`` (outcome), ``ingest.resolutions_unclear``, ``ingest.book_ticks_thinned``; histogram
``ingest.feed_lag`` ms (source) = venue time → receive time. Gauges read at collection: ``ingest.feed_silence``
s (feed) = time since the feed's last data message; ``ingest.books`` (state: FRESH, STALE, UNSYNCED) and
``ingest.book_age_max`` s = the longest any followed book went without an update.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.ingest import resolution as rs

_LAG_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2000, 3000, 5000, 10_000, 30_000, 60_000, 300_000)

# tally key prefix → (instrument name, attribute names of the rest of the key, description)
_COUNTERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "frames": ("ingest.frames", ("feed",), "frames received"),
    "parse_errors": ("ingest.parse_errors", ("feed", "kind"), "bad frames and messages"),
    "kept": ("ingest.trades.kept", ("source",), "new trades of followed leaders appended to the log"),
    "filtered": ("ingest.trades.filtered", ("source",), "trades of wallets nobody follows"),
    "duplicate": ("ingest.trades.duplicate", ("source",), "trades already seen on a feed"),
    "activity": ("ingest.activity", ("type",), "non-trade activity rows recorded"),
    "reconnects": ("ingest.reconnects", ("feed",), "feed reconnects"),
    "stalls": ("ingest.stalls", ("feed",), "silent stalls detected by the watchdog"),
    "backfilled": ("ingest.backfilled", (), "trades only the poller delivered"),
    "ticks": ("ingest.ticks", ("kind",), "price ticks emitted"),
    "poll": ("ingest.poll.requests", ("status",), "data-api requests by outcome"),
    "resolutions": ("ingest.resolutions", ("source", "outcome"),
                    "market resolutions seen: EMITTED, DUPLICATE, CONTRADICTED, NO_CLEAR_WINNER, UNWATCHED..."),
    "market_checks": ("ingest.market_checks", ("outcome",),
                      "REST safety-net checks of held markets: OPEN, RESOLVED, NO_CLEAR_WINNER, MALFORMED, FAILED"),
    "held_tokens": ("ingest.held_token_lookups", ("outcome",),
                    "tokens held under no market id whose market the safety net looked up in tt:market: FOUND, "
                    "NO_MARKET_INFO, FAILED (each sync)"),
    "unclear": ("ingest.resolutions_unclear", (),
                "held markets closed without a clear winner for longer than the alert threshold (one each)"),
    "thinned": ("ingest.book_ticks_thinned", (),
                "old price ticks the book publisher dropped from its backlog while Redis did not answer"),
}


class IngestMetrics:
    """Counts everything ingest does; :meth:`count` / :meth:`total` read the tally back."""

    def __init__(self, meter: Any | None = None) -> None:
        meter = meter or metrics.get_meter("tradingtools.ingest")
        self.tally: Counter[tuple[str, ...]] = Counter()
        for feed in ("rtds", "clob"):  # exported from the start: alerting rules read them
            self.tally["reconnects", feed] += 0
            self.tally["stalls", feed] += 0
        self.tally["unclear",] += 0
        self.tally["thinned",] += 0
        for source in (rs.SOCKET, rs.REST):
            self.tally["resolutions", source, rs.CONTRADICTED] += 0
        for prefix, (name, attrs, description) in _COUNTERS.items():
            meter.create_observable_counter(name, callbacks=[self._callback(prefix, attrs)],
                                            description=description)
        self._meter = meter
        self._lag = meter.create_histogram("ingest.feed_lag", unit="ms", description="venue time to receive time",
                                           explicit_bucket_boundaries_advisory=_LAG_BOUNDS_MS)

    def _callback(self, prefix: str, attrs: tuple[str, ...]) -> Any:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            for key, value in list(self.tally.items()):
                if key[0] == prefix:
                    yield Observation(value, dict(zip(attrs, key[1:], strict=False)))
        return observe

    def observe_feeds(self, last_message_s: Mapping[str, Callable[[], float]]) -> None:
        """Export each feed's silence from its last data message's wall time (Unix seconds; 0: none yet)."""
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            now = time.time()
            for feed, last in last_message_s.items():
                at = last()
                if at > 0:
                    yield Observation(max(0.0, now - at), {"feed": feed})
        self._meter.create_observable_gauge("ingest.feed_silence", callbacks=[observe], unit="s",
                                            description="Time since the feed's last data message")

    def observe_books(self, books: Callable[[], Iterable[Any]]) -> None:
        """Export the followed books by state and the oldest one's age (``books()`` yields ``AssetBook``s)."""
        def states(_options: CallbackOptions) -> Iterable[Observation]:
            counts = {"FRESH": 0, "STALE": 0, "UNSYNCED": 0}
            for book in books():
                counts["STALE" if book.stale else "FRESH" if book.synced else "UNSYNCED"] += 1
            for state, n in counts.items():
                yield Observation(n, {"state": state})

        def oldest(_options: CallbackOptions) -> Iterable[Observation]:
            updated = [b.updated_ms for b in books() if b.updated_ms]
            if updated:
                yield Observation(max(0.0, time.time() - min(updated) / 1000))
        self._meter.create_observable_gauge("ingest.books", callbacks=[states],
                                            description="Followed books by state (FRESH, STALE, UNSYNCED)")
        self._meter.create_observable_gauge("ingest.book_age_max", callbacks=[oldest], unit="s",
                                            description="Longest time any followed book went without an update")

    def frame(self, feed: str, n: int = 1) -> None:
        """Frames received on a feed."""
        self.tally["frames", feed] += n

    def parse_error(self, feed: str, kind: str) -> None:
        """A frame or message that could not be used."""
        self.tally["parse_errors", feed, kind] += 1

    def kept(self, source: str) -> None:
        """A followed leader's trade, new, appended to the log."""
        self.tally["kept", source] += 1

    def filtered(self, source: str, n: int = 1) -> None:
        """Trades of wallets nobody follows."""
        self.tally["filtered", source] += n

    def duplicate(self, source: str) -> None:
        """A trade seen before (the other feed or a re-poll)."""
        self.tally["duplicate", source] += 1

    def activity(self, kind: str) -> None:
        """A non-trade activity row recorded."""
        self.tally["activity", kind] += 1

    def reconnect(self, feed: str) -> None:
        """A feed reconnected."""
        self.tally["reconnects", feed] += 1

    def stall(self, feed: str) -> None:
        """The watchdog found a feed silent with its socket open."""
        self.tally["stalls", feed] += 1

    def backfilled(self, n: int = 1) -> None:
        """Trades the poller found that the websocket had not delivered."""
        self.tally["backfilled",] += n

    def tick(self, kind: str, n: int = 1) -> None:
        """Price ticks emitted."""
        self.tally["ticks", kind] += n

    def poll(self, status: str) -> None:
        """A data-api request finished with ``status`` (ok, 429, error...)."""
        self.tally["poll", status] += 1

    def resolution(self, source: str, outcome: str) -> None:
        """A market resolution seen on ``source`` (CLOB_SOCKET, CLOB_REST) and what became of it."""
        self.tally["resolutions", source, outcome] += 1

    def market_check(self, outcome: str) -> None:
        """One REST check of a market by the safety net."""
        self.tally["market_checks", outcome] += 1

    def held_token_lookup(self, outcome: str, n: int = 1) -> None:
        """Tokens held under no market id whose market the safety net looked up (FOUND, NO_MARKET_INFO, FAILED)."""
        self.tally["held_tokens", outcome] += n

    def resolution_unclear(self) -> None:
        """A held market has been closed without a clear winner for longer than the alert threshold."""
        self.tally["unclear",] += 1

    def book_ticks_thinned(self, n: int) -> None:
        """Old price ticks dropped from the book publisher's backlog (Redis not answering)."""
        self.tally["thinned",] += n

    def lag(self, source: str, lag_ms: float) -> None:
        """Feed lag: venue time → receive time."""
        self._lag.record(max(lag_ms, 0.0), {"source": source})

    def count(self, *key: str) -> int:
        """The tally of one key, e.g. ``count("parse_errors", "rtds", "NOT_JSON")``."""
        return self.tally[key]

    def total(self, prefix: str, feed: str | None = None) -> int:
        """Sum of tallies whose key starts with ``prefix`` (and ``feed`` when given)."""
        return sum(v for k, v in self.tally.items() if k[0] == prefix and (feed is None or k[1:2] == (feed,)))
