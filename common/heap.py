"""Keeping a service's long-lived heap out of Python's cyclic garbage collector.

A full collection scans every tracked object. In a service that holds a large, long-lived heap (a fan-out's
subscription cache, 100,000 armed triggers) each pass stops the event loop for 50-250 ms and frees almost
nothing, and it comes back whenever the heap grew by a quarter. Frozen objects (``gc.freeze``) are no longer
scanned; they are still freed by reference counting as usual.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations between two young collections (Python's default: 700)
BULK_LOAD_MIN = 1_000  # objects loaded at once (triggers, ...) worth a freeze after the load


def collect_less_often() -> None:
    """Collect the young generations less often (a full collection then comes after 100 of theirs at the soonest):
    set before a start-up that loads a large heap, so that the load is not scanned again and again."""
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)


def settle_start_up_heap() -> None:
    """Collect once, freeze what is alive (modules, start-up caches), and collect the young generations less often,
    so that no full collection lands inside a burst of work."""
    gc.collect()
    gc.freeze()
    collect_less_often()


def freeze_bulk_load(loaded: int) -> bool:
    """After ``loaded`` objects came in at once: at ``BULK_LOAD_MIN`` or more, collect once (the garbage of the load
    is freed, not frozen) and freeze the rest; returns whether it did."""
    if loaded < BULK_LOAD_MIN:
        return False
    gc.collect()
    gc.freeze()
    return True
