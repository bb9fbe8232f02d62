"""The harness's own pieces: simulator wiring of ``make up``, the supervisor's one-shot env and reload,
and the pure rules the demo checks its output against."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from common.config import project_root
from tests.helpers import eventually_sync
from tools.demo_checks import expected_buy_usd, expected_sell
from tools.demo_report import percentile
from tools.stack import wire_simulator
from tools.supervisor import ONCE_DIR, Program, programs_to_json

ALL_URLS = {"TT_RTDS_URL", "TT_CLOB_WS_URL", "TT_CLOB_API_URL", "TT_DATA_API_URL", "TT_INSIDERS_API_URL"}


@pytest.mark.parametrize(
    ("given", "wired", "fake_insiders"),
    [
        ({}, ALL_URLS, True),
        ({"TT_RTDS_URL": "wss://ws-live-data.polymarket.com"}, ALL_URLS - {"TT_RTDS_URL"}, True),
        ({"TT_INSIDERS_API_URL": "http://127.0.0.1:19999", "TT_INSIDERS_API_TOKEN": "t"},
         ALL_URLS - {"TT_INSIDERS_API_URL"}, False),
        ({name: "http://127.0.0.1:1" if "WS" not in name and "RTDS" not in name else "ws://127.0.0.1:1"
          for name in ALL_URLS} | {"TT_INSIDERS_API_TOKEN": "t"}, set(), False),
    ],
)
def test_make_up_points_unset_urls_at_its_simulator(given: dict[str, str], wired: set[str],
                                                    fake_insiders: bool) -> None:
    env = {"TT_SIM_RTDS_PORT": "19201", "TT_SIM_CLOB_PORT": "19202", **given}
    assert set(wire_simulator(env)) == wired
    assert {k: env[k] for k in given} == given  # what was set is kept
    if "TT_RTDS_URL" in wired:
        assert env["TT_RTDS_URL"] == "ws://127.0.0.1:19201"
    if "TT_CLOB_WS_URL" in wired:
        assert env["TT_CLOB_WS_URL"] == "ws://127.0.0.1:19202/ws/market"
    assert (env.get("TT_STACK_SIM_INSIDERS") == "1") is fake_insiders
    if fake_insiders:
        assert env["TT_INSIDERS_API_URL"] == "http://127.0.0.1:9204" and len(env["TT_INSIDERS_API_TOKEN"]) == 32


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, 0.0), ([5.0], 99, 5.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0), ([float(i) for i in range(1, 101)], 99, 99.0),
     ([float(i) for i in range(1, 101)], 50, 50.0), ([3.0, 1.0, 2.0], 100, 3.0)],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize(
    ("sizing", "notional", "balance", "expected"),
    [
        ({"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25"}, "300", None, "25"),
        ({"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.2", "maxOrderUsd": "100"}, "44", None, "8.8"),
        ({"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.2", "maxOrderUsd": "100"}, "900", None, "100"),
        ({"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.25"}, "2", None, "1"),  # minOrderUsd defaults to $1
        ({"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.25"}, "97.5", None, "24.37"),  # down to the cent
        ({"mode": "SIZING_MODE_PERCENT_OF_BALANCE", "percentOfBalance": "2"}, "10", "2500", "50"),
    ],
)
def test_expected_buy_amount(sizing: dict[str, str], notional: str, balance: str | None, expected: str) -> None:
    assert expected_buy_usd(sizing, Decimal(notional), Decimal(balance) if balance else None) == Decimal(expected)


@pytest.mark.parametrize(
    ("held", "sold", "before", "expected"),
    [("714.24", "805", "1610", "357.12"), ("317.67", "805", "1610", "158.83"), ("158.84", "805", "805", "158.84"),
     ("10", "900", "1000", "10"),  # 1 share would remain: below the 5-share minimum, sold too
     ("100", "1", "3", "33.33")],
)
def test_expected_sell_size(held: str, sold: str, before: str, expected: str) -> None:
    assert expected_sell(Decimal(held), Decimal(sold), Decimal(before)) == Decimal(expected)


@pytest.fixture
def run_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tt-harness-") as tmp:
        yield Path(tmp)


def _state(run: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((run / "supervisor.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def _prog(run: Path, name: str) -> dict[str, Any]:
    found = [p for p in _state(run).get("programs", []) if p["name"] == name]
    return found[0] if found else {}


@pytest.mark.integration
def test_supervisor_one_shot_env_and_reload(run_root: Path) -> None:
    run, spec, out = run_root / "run", run_root / "programs.json", run_root / "seen.txt"
    run.mkdir()
    printer = f"import os, time; open({str(out)!r}, 'a').write(os.environ.get('TT_HOOK', '-') + '\\n'); time.sleep(600)"
    spec.write_text(programs_to_json([Program("worker", (sys.executable, "-c", printer))]))
    (run / ONCE_DIR).mkdir()
    (run / ONCE_DIR / "worker.json").write_text(json.dumps({"TT_HOOK": "armed"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(TT_STACK_BACKOFF_S="0.02", TT_STACK_STOP_GRACE_S="2")
    sup = subprocess.Popen([sys.executable, "-m", "tools.supervisor", str(spec), str(run)], cwd=project_root(),
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first: dict[str, Any] = eventually_sync(lambda: _prog(run, "worker") if _prog(run, "worker").get(
            "state") == "running" else {}, timeout_s=20, message="worker running")
        eventually_sync(lambda: out.exists() and out.read_text() == "armed\n", timeout_s=20, message="hook seen")
        assert not (run / ONCE_DIR / "worker.json").exists()  # consumed
        os.kill(first["pid"], signal.SIGKILL)
        eventually_sync(lambda: out.read_text() == "armed\n-\n", timeout_s=20, message="restarted without the hook")

        spec.write_text(programs_to_json([Program("other", (sys.executable, "-c", "import time; time.sleep(600)"))]))
        sup.send_signal(signal.SIGHUP)
        eventually_sync(lambda: [p["name"] for p in _state(run)["programs"]] == ["other"]
                        and _prog(run, "other")["state"] == "running", timeout_s=20, message="reloaded")
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(timeout=20)
    assert all(p["state"] == "stopped" for p in _state(run)["programs"])


def test_aof_tail_cuts_the_file_back_to_its_size_a_while_ago(tmp_path: Path) -> None:
    from tools.chaos import AofTail

    aof = tmp_path / "appendonly.aof"
    aof.write_bytes(b"a" * 100)
    tail = AofTail(aof, interval_s=0.005)
    tail.start()
    try:
        eventually_sync(lambda: tail.samples, timeout_s=5)
        time.sleep(1.0)
        with aof.open("ab") as fh:
            fh.write(b"b" * 50)  # written within the last 0.5 s: what a crash loses
        eventually_sync(lambda: tail.samples[-1][1] == 150, timeout_s=5)
    finally:
        tail.stop()
    assert tail.cut_back(0.5) == 50
    assert aof.read_bytes() == b"a" * 100
    assert tail.cut_back(0.5) == 0  # nothing newer left to lose
