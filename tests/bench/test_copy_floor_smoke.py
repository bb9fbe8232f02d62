"""``bench pipeline``'s copy floor: ``bench hops`` in a process of its own against the stack's Redis and
PostgreSQL, summarised per gap. The pipeline smoke run skips it (``TT_BENCH_FLOOR=0``): here a few samples
against the session's storage take the same path as the bench's hundred against its stack's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.pipeline import copy_floor

pytestmark = pytest.mark.integration


def test_the_copy_floor_is_measured_against_the_stack_storage(redis_url: str, db_url: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TT_BENCH_FLOOR", raising=False)
    (tmp_path / "redis_url").write_text(redis_url + "\n")  # where a running stack says where its storage is
    (tmp_path / "database_url").write_text(db_url + "\n")
    bench = SimpleNamespace(p=SimpleNamespace(run_dir=tmp_path))
    floor = copy_floor(bench, samples=5)  # type: ignore[arg-type]
    assert floor is not None, "bench hops failed against the storage"
    assert set(floor) == {"1 ms", "5 ms"}, floor
    for gap in floor.values():
        assert 0 < gap["drawn_p50_ms"] <= gap["drawn_p99_ms"] and gap["cpu_ms_per_copy"] > 0, floor
