"""Pure helpers of the bench and the demo."""

from __future__ import annotations

import pytest

from bench import percentile, summarize
from tools.demo import compact, prune


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [([1.0], 50, 1.0), ([1.0, 2.0], 50, 1.0), ([1.0, 2.0], 51, 2.0), (list(range(1, 101)), 99, 99),
     (list(range(1, 1001)), 99.9, 999), (list(range(1, 101)), 100, 100)],
)
def test_percentile_is_nearest_rank(values: list[float], pct: float, expected: float) -> None:
    assert percentile(values, pct) == expected


def test_summarize() -> None:
    s = summarize([float(v) for v in range(1000, 0, -1)])
    assert (s["n"], s["p50_ms"], s["p99_ms"], s["p99_9_ms"], s["max_ms"]) == (1000, 500, 990, 999, 1000)


@pytest.mark.parametrize(
    ("body", "expected"),
    [('{"a": "", "b": {"c": "", "d": [], "e": 1}}', '{"a":"","b":{"e":1}}'),
     ('{"fills": [], "nextPageToken": ""}', '{"fills":[],"nextPageToken":""}'),
     ("not json", "not json"), ("", "")],
)
def test_compact_drops_nested_empties(body: str, expected: str) -> None:
    assert compact(body) == expected


def test_compact_cuts_long_bodies() -> None:
    text = compact('{"a": "' + "x" * 500 + '"}', width=40)
    assert len(text) == 40 and text.endswith("…")


def test_prune_keeps_falsy_values_that_mean_something() -> None:
    assert prune({"x": {"n": 0, "b": False, "s": ""}}) == {"x": {"n": 0, "b": False}}


def test_stack_ports_the_simulator_took_are_moved() -> None:
    from tools.pipeline import _move_off, _url_ports

    sim = {"TT_RTDS_URL": "ws://127.0.0.1:41893", "TT_INSIDERS_API_URL": "http://127.0.0.1:41900/v1",
           "TT_INSIDERS_API_TOKEN": "x"}
    taken = _url_ports(sim)
    assert taken == {41893, 41900}
    env = {"TT_GATEWAY_PORT": "41893", "TT_CONTROL_GRPC_PORT": "41894", "TT_ROUTER_GRPC_PORT": "41900"}
    _move_off(env, taken)
    assert env["TT_CONTROL_GRPC_PORT"] == "41894"  # not taken: kept
    assert int(env["TT_GATEWAY_PORT"]) not in taken | {41893} and int(env["TT_ROUTER_GRPC_PORT"]) not in taken


def test_a_moved_port_is_not_another_services_port(monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.pipeline as pipeline

    picks = iter([41894, 41900, 50001])  # control's port, a taken one, then a free one
    monkeypatch.setattr("common.embedded.free_port", lambda: next(picks))
    env = {"TT_GATEWAY_PORT": "41893", "TT_CONTROL_GRPC_PORT": "41894"}
    pipeline._move_off(env, {41893, 41900})
    assert env == {"TT_GATEWAY_PORT": "50001", "TT_CONTROL_GRPC_PORT": "41894"}


def test_the_stack_gets_distinct_free_ports() -> None:
    from tools.pipeline import free_port_env

    for _ in range(200):
        ports = list(free_port_env().values())
        assert len(set(ports)) == len(ports)
