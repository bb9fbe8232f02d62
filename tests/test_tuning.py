"""Tuning constants: defaults in code, typed and bounded overrides, unknown names refused."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from common.config import ConfigError
from common.tuning import describe, overrides, tune, tuning_from_env


@dataclass(frozen=True, slots=True)
class Demo:
    wait_s: float = tune(1.5, "how long", minimum=0.1, maximum=10.0)
    batch: int = tune(8, "how many", minimum=1)
    ratio: Decimal = tune(Decimal("0.5"), "how much", maximum=Decimal(1))
    on: bool = tune(True, "whether")
    source: str = tune("log", "where", choices=("log", "grpc"))
    name: str = tune("demo", "what")

    def __post_init__(self) -> None:
        if self.batch > 100 and self.wait_s < 1:
            raise ValueError("TT_TUNE_DEMO_BATCH above 100 needs TT_TUNE_DEMO_WAIT_S >= 1")


def test_defaults_come_from_the_code() -> None:
    assert tuning_from_env(Demo, "demo", {}) == Demo()


@pytest.mark.parametrize(("env", "field", "value"), [
    ({"TT_TUNE_DEMO_WAIT_S": "2"}, "wait_s", 2.0),
    ({"TT_TUNE_DEMO_BATCH": " 3 "}, "batch", 3),
    ({"TT_TUNE_DEMO_RATIO": "0.25"}, "ratio", Decimal("0.25")),
    ({"TT_TUNE_DEMO_ON": "off"}, "on", False),
    ({"TT_TUNE_DEMO_SOURCE": "GRPC"}, "source", "grpc"),
    ({"TT_TUNE_DEMO_NAME": "other"}, "name", "other"),
    ({"TT_TUNE_DEMO_BATCH": ""}, "batch", 8),
    ({"TT_TUNE_OTHER_BATCH": "5"}, "batch", 8),  # another service's constant
])
def test_an_override_is_parsed_by_the_field_type(env: dict[str, str], field: str, value: object) -> None:
    assert getattr(tuning_from_env(Demo, "demo", env), field) == value


@pytest.mark.parametrize(("env", "names"), [
    ({"TT_TUNE_DEMO_WAIT_S": "0.01"}, "TT_TUNE_DEMO_WAIT_S"),
    ({"TT_TUNE_DEMO_WAIT_S": "11"}, "TT_TUNE_DEMO_WAIT_S"),
    ({"TT_TUNE_DEMO_WAIT_S": "soon"}, "TT_TUNE_DEMO_WAIT_S"),
    ({"TT_TUNE_DEMO_WAIT_S": "nan"}, "TT_TUNE_DEMO_WAIT_S"),  # nan < 0.1 and nan > 10 are both False
    ({"TT_TUNE_DEMO_WAIT_S": "inf"}, "TT_TUNE_DEMO_WAIT_S"),
    ({"TT_TUNE_DEMO_WAIT_S": "1e400"}, "TT_TUNE_DEMO_WAIT_S"),
    ({"TT_TUNE_DEMO_RATIO": "NaN"}, "TT_TUNE_DEMO_RATIO"),
    ({"TT_TUNE_DEMO_BATCH": "0"}, "TT_TUNE_DEMO_BATCH"),
    ({"TT_TUNE_DEMO_BATCH": "2.5"}, "TT_TUNE_DEMO_BATCH"),
    ({"TT_TUNE_DEMO_RATIO": "1.5"}, "TT_TUNE_DEMO_RATIO"),
    ({"TT_TUNE_DEMO_ON": "maybe"}, "TT_TUNE_DEMO_ON"),
    ({"TT_TUNE_DEMO_SOURCE": "kafka"}, "TT_TUNE_DEMO_SOURCE"),
    ({"TT_TUNE_DEMO_WAITS": "1"}, "TT_TUNE_DEMO_WAITS"),
    ({"TT_TUNE_DEMO_BATCH": "200", "TT_TUNE_DEMO_WAIT_S": "0.5"}, "TT_TUNE_DEMO_BATCH"),
    ({"TT_DEMO_BATCH": "5"}, "TT_TUNE_DEMO_BATCH"),  # its former name: refused, not silently ignored
])
def test_a_bad_override_fails_start_up_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        tuning_from_env(Demo, "demo", env)


def test_overrides_and_describe() -> None:
    env = overrides("demo", wait_s=3, source="grpc")
    assert env == {"TT_TUNE_DEMO_WAIT_S": "3", "TT_TUNE_DEMO_SOURCE": "grpc"}
    assert tuning_from_env(Demo, "demo", env).wait_s == 3.0
    assert describe(Demo)[0] == ("wait_s", 1.5, "how long")
