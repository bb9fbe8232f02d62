"""``make up``'s own settings (tools.stack): booleans and durations read as every other setting is."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError
from tools import stack

ON = ["1", "true", "yes", "on", "TRUE", " On "]
OFF = ["0", "false", "no", "off", "False", "OFF", ""]  # set but blank: off, as it always was


@pytest.mark.parametrize(("raw", "expected"), [(None, True), *((r, True) for r in ON), *((r, False) for r in OFF)])
def test_the_simulator_switch_is_a_boolean(raw: str | None, expected: bool) -> None:
    env = {} if raw is None else {"TT_STACK_SIMULATOR": raw}
    assert stack.simulator_enabled(env) is expected


@pytest.mark.parametrize("raw", ["2", "maybe", "disabled", "n"])
def test_a_simulator_switch_that_is_not_a_boolean_is_refused(raw: str, tmp_path: Path) -> None:
    for root in (None, tmp_path):  # also where no simulator exists: the typo is still the operator's
        with pytest.raises(ConfigError, match="TT_STACK_SIMULATOR"):
            stack.simulator_enabled({"TT_STACK_SIMULATOR": raw}, root)


@pytest.mark.parametrize("raw", ["nan", "inf", "1e400", "0.5", "soon"])
def test_up_refuses_a_ready_timeout_that_is_not_a_finite_number_of_seconds(raw: str, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A nan deadline is never passed: up would wait for a stack that cannot start for ever."""

    def went_on(*_args: object) -> None:
        raise stack.StackError("up went on past its settings")

    monkeypatch.setattr(stack, "ensure_token", went_on)  # the first step that starts anything
    lines: list[str] = []
    env = {"TT_RUN_DIR": str(tmp_path), "TT_STACK_READY_TIMEOUT_S": raw}
    assert stack.up(env, out=lines.append) == 1
    assert any("TT_STACK_READY_TIMEOUT_S" in line for line in lines)
    assert not any("went on" in line for line in lines)


REAL_FEEDS = {"TT_RTDS_URL": "wss://ws-live-data.polymarket.com",
              "TT_CLOB_WS_URL": "wss://ws-subscriptions-clob.polymarket.com/ws/market",
              "TT_CLOB_API_URL": "https://clob.polymarket.com", "TT_DATA_API_URL": "https://data-api.polymarket.com"}


@pytest.mark.parametrize("left_to_sim", [list(REAL_FEEDS), ["TT_RTDS_URL"], ["TT_CLOB_WS_URL", "TT_DATA_API_URL"]])
def test_simulated_feeds_never_drive_a_venue_off_this_machine(left_to_sim: list[str]) -> None:
    """Made-up leader trades copied with real money: refused, naming the feeds left to the simulator."""
    env = {k: v for k, v in REAL_FEEDS.items() if k not in left_to_sim}
    env |= {"TT_INSIDERS_API_URL": "https://insiders.example", "TT_INSIDERS_API_TOKEN": "t"}
    before = dict(env)
    with pytest.raises(ConfigError, match=left_to_sim[0]):
        stack.wire_simulator(env)
    assert env == before  # nothing wired


@pytest.mark.parametrize(("venue", "feeds", "wired"), [
    ("https://insiders.example", REAL_FEEDS, []),  # every feed real: the simulator runs unused
    ("http://127.0.0.1:19999", {}, list(REAL_FEEDS)),  # a fake (or a tunnel) on this machine
    ("http://localhost:19999", {}, list(REAL_FEEDS)),
    ("http://[::1]:19999", {}, list(REAL_FEEDS)),
    ("", {}, [*REAL_FEEDS, "TT_INSIDERS_API_URL"]),  # the simulator's own fake venue
])
def test_the_simulator_stands_in_beside_a_venue_on_this_machine_or_real_feeds(
        venue: str, feeds: dict[str, str], wired: list[str]) -> None:
    env = {**feeds, "TT_INSIDERS_API_TOKEN": "t"} | ({"TT_INSIDERS_API_URL": venue} if venue else {})
    assert stack.wire_simulator(env) == wired

