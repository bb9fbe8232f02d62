"""The load generator's garbage collection while a scenario runs (``bench pipeline``)."""

from __future__ import annotations

import gc

import pytest

from bench._pipeline_harness import no_full_collections


def test_a_scenario_runs_without_full_collections_and_the_settings_come_back() -> None:
    before = gc.get_threshold()
    with no_full_collections():
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2] and full >= 1 << 30
    assert gc.get_threshold() == before


def test_the_settings_come_back_when_a_scenario_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), no_full_collections():
        raise RuntimeError("scenario failed")
    assert gc.get_threshold() == before
