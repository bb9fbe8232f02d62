"""The one-trigger firing rule and the check a fire makes against the row it locked (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.guard.domain.trigger_model import Kind, Source, TriggerSpec, fires_at, still_fires

D = Decimal
TP = TriggerSpec("t", "a", Kind.TAKE_PROFIT, trigger_price=D("0.70"))
SL = TriggerSpec("t", "a", Kind.STOP_LOSS, trigger_price=D("0.40"))
TS = TriggerSpec("t", "a", Kind.TRAILING_STOP, trail_pct=D("10"), activation_price=D("0.50"))


@pytest.mark.parametrize(("spec", "price", "mark", "fires"), [
    (TP, "0.70", "0", True),  # at the take-profit
    (TP, "0.69", "0", False),
    (SL, "0.40", "0", True),  # at the stop
    (SL, "0.41", "0", False),
    (TS, "0.54", "0.60", True),  # 0.60 x 0.9 = 0.54
    (TS, "0.55", "0.60", False),
    (TS, "0.10", "0", False),  # not active: no mark
    (TS, "0.40", "0.45", False),  # mark below the activation price
])
def test_fires_at(spec: TriggerSpec, price: str, mark: str, fires: bool) -> None:
    assert fires_at(spec, D(price), D(mark)) is fires


@pytest.mark.parametrize(("decided", "current", "price", "fires"), [
    (SL, SL, "0.35", True),  # unchanged
    (SL, SL._replace(trigger_price=D("0.20")), "0.35", False),  # PATCHed below the price
    (SL, SL._replace(trigger_price=D("0.38")), "0.35", True),  # PATCHed, still crossed
    (TP, TP._replace(trigger_price=D("0.80")), "0.75", False),
    (SL, SL._replace(source=Source.MID), "0.35", False),  # watches another price now
    (SL, SL._replace(closing=False), "0.35", True),  # sizing changed: read from the row when sizing
    # trailing: the engine's mark may be ahead of the row's (saved now and then)
    (TS._replace(high_water_mark=D("0.60")), TS._replace(high_water_mark=D("0.55")), "0.54", True),
    (TS._replace(high_water_mark=D("0.60")), TS._replace(trail_pct=D("5")), "0.56", True),  # 0.60 x 0.95 = 0.57
    (TS._replace(high_water_mark=D("0.60")), TS._replace(trail_pct=D("5")), "0.58", False),
    (TS._replace(high_water_mark=D("0.60")), TS._replace(activation_price=D("0.65")), "0.50", False),
])
def test_still_fires(decided: TriggerSpec, current: TriggerSpec, price: str, fires: bool) -> None:
    assert still_fires(decided, current, D(price)) is fires
