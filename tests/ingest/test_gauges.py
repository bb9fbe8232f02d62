"""Ingest's gauges read at collection: each feed's silence, the followed books by state and the oldest one's age."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.ingest.metrics import IngestMetrics


def collected(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name: list(m.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}


def test_feed_silence_and_books_by_state() -> None:
    reader = InMemoryMetricReader()
    m = IngestMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"))
    now = time.time()
    m.observe_feeds({"rtds": lambda: now - 3, "clob": lambda: 0.0})  # clob: nothing yet, not exported
    books = [SimpleNamespace(stale=False, synced=True, updated_ms=int((now - 1) * 1000)),
             SimpleNamespace(stale=True, synced=True, updated_ms=int((now - 40) * 1000)),
             SimpleNamespace(stale=True, synced=False, updated_ms=0),
             SimpleNamespace(stale=False, synced=False, updated_ms=int(now * 1000))]
    m.observe_books(lambda: books)
    got = collected(reader)
    [silence] = got["ingest.feed_silence"]
    assert silence.attributes == {"feed": "rtds"} and 3 <= silence.value < 10
    assert {p.attributes["state"]: p.value for p in got["ingest.books"]} == {"FRESH": 1, "STALE": 2, "UNSYNCED": 1}
    [oldest] = got["ingest.book_age_max"]
    assert 40 <= oldest.value < 50
