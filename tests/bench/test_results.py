"""Benchmark results: one current baseline per benchmark; partial runs stay out of git."""

import json
from pathlib import Path

import pytest

from bench import save_results

pytestmark = pytest.mark.integration  # machine() runs git for the commit


def test_a_full_run_replaces_the_baseline(tmp_path: Path) -> None:
    first = save_results("demo", {"p99_ms": 3}, tmp_path)
    second = save_results("demo", {"p99_ms": 2}, tmp_path)

    assert first == second == tmp_path / "demo.json"
    body = json.loads(second.read_text())
    assert body["p99_ms"] == 2
    assert body["bench"] == "demo"
    assert {"commit", "cpu_model", "nproc"} <= set(body["machine"])


def test_a_partial_run_goes_to_the_ignored_runs_folder(tmp_path: Path) -> None:
    save_results("demo", {"p99_ms": 3}, tmp_path)

    path = save_results("demo", {"p99_ms": 9}, tmp_path, baseline=False)

    assert path.parent == tmp_path / "runs"
    assert path.name.startswith("demo-")
    assert json.loads((tmp_path / "demo.json").read_text())["p99_ms"] == 3


def test_the_runs_folder_is_ignored_by_git() -> None:
    ignore = (Path(__file__).resolve().parents[2] / ".gitignore").read_text().splitlines()
    assert "bench/results/runs/" in ignore
