"""Tuning constants: values the code chose, with the reason, that an operator never needs to set.

Each service keeps its constants in one frozen dataclass whose fields are declared with :func:`tune` (the default
and why it is that). They are code, not configuration: the README's settings table does not list them. Tests,
benchmarks and the demo shorten some (a 2 s breaker instead of 60 s), and an incident may call for one, so each
can still be overridden from the environment as ``TT_TUNE_<SERVICE>_<FIELD>`` (``TT_TUNE_EXECUTOR_BREAKER_OPEN_S``).
An override is parsed by the field's type and bounds, and a ``TT_TUNE_<SERVICE>_*`` variable that names no field
fails start-up, so a typo is never silently ignored; so does a constant's former name (``TT_<SERVICE>_<FIELD>``),
so that an environment written for an older release does not silently lose its values.

``python -m tools.settings`` prints every service's settings and tuning constants with their reasons.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeVar

from common.config import ConfigError, env_bool, env_decimal, env_float_seconds, env_int, env_str

T = TypeVar("T")
PREFIX = "TT_TUNE_"


def tune(default: Any, why: str, *, minimum: Any = None, maximum: Any = None,
         choices: tuple[str, ...] = ()) -> Any:
    """Declare a tuning constant: its ``default``, ``why`` it is that, and the bounds an override must keep."""
    return dataclasses.field(default=default, metadata={"why": why, "minimum": minimum, "maximum": maximum,
                                                        "choices": choices})


def variable(service: str, name: str) -> str:
    """The environment variable that overrides constant ``name`` of ``service``."""
    return f"{PREFIX}{service.upper()}_{name.upper()}"


def tuning_from_env(cls: type[T], service: str, env: Mapping[str, str],
                    former: Mapping[str, str] | None = None) -> T:
    """``cls`` (a dataclass of :func:`tune` fields) with the overrides ``env`` holds for ``service``. ``former``
    names a constant's former variable where it was not ``TT_<SERVICE>_<FIELD>``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{PREFIX}{service.upper()}_"
    known = {variable(service, name) for name in fields}
    for var in sorted(env):
        if var.startswith(prefix) and var not in known:
            raise ConfigError(f"{var}: no such tuning constant of {service} "
                              f"(python -m tools.settings {service} lists them)")
    for name in fields:
        retired = (former or {}).get(name) or f"TT_{service.upper()}_{name.upper()}"
        if env.get(retired, "").strip():
            raise ConfigError(f"{retired} is no longer a setting: it is a tuning constant in code now "
                              f"(override it as {variable(service, name)} only if you must)")
    values = {name: _parse(variable(service, name), field, env) for name, field in fields.items()
              if env.get(variable(service, name), "").strip()}
    try:
        return cls(**values)
    except ValueError as exc:  # a check across fields in __post_init__
        raise ConfigError(str(exc)) from None


def _parse(var: str, field: dataclasses.Field[Any], env: Mapping[str, str]) -> Any:
    default = field.default
    low, high, choices = field.metadata["minimum"], field.metadata["maximum"], field.metadata["choices"]
    if isinstance(default, bool):
        return env_bool(env, var, default)
    if isinstance(default, int):
        return env_int(env, var, default, minimum=low, maximum=high)
    if isinstance(default, float):  # finite, within the bounds (nan would pass both)
        return env_float_seconds(env, var, default, minimum=low if low is not None else 0.0, maximum=high)
    if isinstance(default, Decimal):
        return env_decimal(env, var, default, minimum=low, maximum=high)
    value_s = env_str(env, var, str(default))
    if choices and value_s.lower() not in choices:
        raise ConfigError(f"{var} must be one of {', '.join(choices)}, got {value_s!r}")
    return value_s.lower() if choices else value_s


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """``(field, default, why)`` of every constant of a tuning dataclass, in declaration order."""
    return [(f.name, f.default, f.metadata.get("why", "")) for f in dataclasses.fields(cls)]


def overrides(service: str, **values: object) -> dict[str, str]:
    """Environment variables overriding constants of ``service``: ``overrides("executor", breaker_open_s=2)``."""
    return {variable(service, name): str(value) for name, value in values.items()}
