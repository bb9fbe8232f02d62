"""python -m tools.settings lists every service's settings and tuning constants."""

from __future__ import annotations

import pytest

from tools import settings


def test_every_service_lists_its_settings_and_reasoned_constants(capsys: pytest.CaptureFixture[str]) -> None:
    assert settings.main([]) == 0
    out = capsys.readouterr().out
    for service in settings.SERVICES:
        assert f"== {service}" in out
    assert "TT_TUNE_EXECUTOR_BREAKER_OPEN_S" in out and "TT_EXECUTOR_GRPC_PORT" in out


def test_an_unknown_service_is_refused() -> None:
    with pytest.raises(SystemExit):
        settings.main(["bogus"])


@pytest.mark.parametrize("service", settings.SERVICES)
def test_every_tuning_constant_says_why(service: str) -> None:
    import importlib

    from common.tuning import describe

    tuning = getattr(importlib.import_module(f"services.{service}.config"), "Tuning", None)
    if tuning is None:
        pytest.skip(f"{service} has no tuning constants yet")
    assert all(len(why) > 10 for _name, _default, why in describe(tuning))
