"""The book publisher counts the ticks it drops from its backlog while Redis does not answer
(``ingest.book_ticks_thinned``), exported as 0 from the start."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from services.ingest import clob
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.metrics import IngestMetrics

MARKET = "0x" + "ab" * 32
ASSET = "1" * 70


def _exported(reader: InMemoryMetricReader, name: str) -> list[int]:
    data = reader.get_metrics_data()
    assert data is not None
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name
              for p in m.data.data_points]
    return [int(p.value) for p in points if isinstance(p, NumberDataPoint)]


def _publisher(metrics: IngestMetrics, backlog_max: int) -> tuple[BookState, BookPublisher]:
    books = BookState()
    books.track(ASSET)
    books.apply(clob.parse_event({"event_type": "book", "asset_id": ASSET, "market": MARKET, "bids": [], "asks": [],
                                  "timestamp": "1"}), 1000)

    async def never() -> Any:
        raise AssertionError("not connected in this test")
    return books, BookPublisher(never, books, metrics, backlog_max=backlog_max, fresh_s=0.0)


def _move(books: BookState, pub: BookPublisher, step: int) -> None:
    """The best bid moves between 0.40 and 0.41 (its extremes stay the same: old ticks can go)."""
    price = "0.41" if step % 2 else "0.40"
    old = "0.40" if step % 2 else "0.41"
    changes = [{"asset_id": ASSET, "price": old, "size": "0", "side": "BUY"},
               {"asset_id": ASSET, "price": price, "size": "10", "side": "BUY"}]
    msg = clob.parse_event({"event_type": "price_change", "market": MARKET, "timestamp": str(2 + step),
                            "price_changes": changes})
    for touched in books.apply(msg, 2000 + step):
        pub.mark(touched, 1_000 + step)  # received long ago: none is fresh


def test_a_new_ingest_exports_zero_ticks_thinned() -> None:
    reader = InMemoryMetricReader()
    IngestMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"))
    assert _exported(reader, "ingest.book_ticks_thinned") == [0]


def test_ticks_dropped_from_the_backlog_are_counted() -> None:
    reader = InMemoryMetricReader()
    metrics = IngestMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"))
    books, pub = _publisher(metrics, backlog_max=100)
    for step in range(101):
        _move(books, pub, step)
    waiting = len(pub._ticks)
    assert 0 < waiting < 101  # thinned once, at the 101st tick
    assert metrics.count("thinned") == 101 - waiting
    assert _exported(reader, "ingest.book_ticks_thinned") == [101 - waiting]
