"""Keeping a long-lived heap out of the cyclic garbage collector's scans (common.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from common.heap import BULK_LOAD_MIN, YOUNG_THRESHOLD, collect_less_often, freeze_bulk_load, settle_start_up_heap


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector's settings and frozen set as they were before the test."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.mark.parametrize(("loaded", "frozen"), [(0, False), (BULK_LOAD_MIN - 1, False), (BULK_LOAD_MIN, True),
                                                (100_000, True)])
def test_only_a_bulk_load_is_frozen(collector: None, loaded: int, frozen: bool) -> None:
    gc.unfreeze()
    kept = [object() for _ in range(10)]  # noqa: F841 - alive through the call
    assert freeze_bulk_load(loaded) is frozen
    assert (gc.get_freeze_count() > 0) is frozen


def test_a_bulk_load_s_garbage_is_freed_not_frozen(collector: None) -> None:
    gc.unfreeze()
    garbage = _Cycle()
    alive = weakref.ref(garbage)
    del garbage
    freeze_bulk_load(BULK_LOAD_MIN)
    assert alive() is None


def test_start_up_heap_is_frozen_and_young_collections_come_less_often(collector: None) -> None:
    gc.unfreeze()
    settle_start_up_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


def test_a_large_load_is_not_scanned_again_and_again(collector: None) -> None:
    collect_less_often()
    gc.collect()
    before = gc.get_stats()[2]["collections"]
    heap = [[i] for i in range(200_000)]  # a start-up load: 200,000 tracked objects
    assert gc.get_stats()[2]["collections"] == before
    del heap
