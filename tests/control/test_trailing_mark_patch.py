"""A PATCH of a trailing stop and its stored high-water mark: an ``activationPrice`` above the mark resets it to
"0" (the stop is inactive until the price reaches the new activation price); any other PATCH keeps it. Pure rules
(table-driven), then over gRPC and over REST through the real Envoy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.control import trigger_rules as rules
from services.control.app import RunningControl
from tests.control.conftest import AUTH, TOKEN, Stubs, trigger
from tests.control.support import execute, query
from tests.edge.conftest import Envoy, start_envoy
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import trigger_pb2 as tpb

TRAILING = tpb.TRIGGER_KIND_TRAILING_STOP


def stored(activation: str = "0.7", trail: str = "10", mark: str = "0.8") -> tpb.Trigger:
    """An ARMED trailing stop as control reads it back (canonical values)."""
    return tpb.Trigger(id="trg_1", kind=TRAILING, trigger_price="0", trail_pct=trail, activation_price=activation,
                       size="10", sell_fraction="0", high_water_mark=mark, state=tpb.TRIGGER_STATE_ARMED)


@pytest.mark.parametrize(("current", "patch", "mark"), [
    # raised above the mark: reset
    pytest.param(stored(), tpb.Trigger(activation_price="0.9"), "0", id="raised-above"),
    pytest.param(stored(), tpb.Trigger(activation_price="0.90", trail_pct="5"), "0", id="raised-above-with-trail"),
    pytest.param(stored(), tpb.Trigger(activation_price="0.8001"), "0", id="just-above"),
    # kept: raised to the mark or below it, lowered, cleared; trail, size or fraction alone
    pytest.param(stored(), tpb.Trigger(activation_price="0.8"), "0.8", id="raised-to-mark"),
    pytest.param(stored(), tpb.Trigger(activation_price="0.75"), "0.8", id="raised-below"),
    pytest.param(stored(), tpb.Trigger(activation_price="0.5"), "0.8", id="lowered"),
    pytest.param(stored(), tpb.Trigger(activation_price="0"), "0.8", id="cleared"),
    pytest.param(stored(), tpb.Trigger(trail_pct="20"), "0.8", id="trail"),
    pytest.param(stored(), tpb.Trigger(size="5"), "0.8", id="size"),
    pytest.param(stored(), tpb.Trigger(size="0", sell_fraction="1"), "0.8", id="fraction"),
    # not active yet: nothing to reset
    pytest.param(stored(mark="0"), tpb.Trigger(activation_price="0.9"), "0", id="inactive"),
    # a mark left below its activation price by an earlier version is no mark
    pytest.param(stored(activation="0.9"), tpb.Trigger(trail_pct="5"), "0", id="stale-mark-below-activation"),
])
def test_mark_after_a_patch(current: tpb.Trigger, patch: tpb.Trigger, mark: str) -> None:
    merged = rules.merge_trigger_patch(current, patch)
    assert merged.high_water_mark == mark
    assert rules.mark_after_patch(merged) == mark


async def create_trailing(stubs: Stubs, db_url: str, mark: str) -> tpb.Trigger:
    """A trailing stop (activation 0.70, trail 10%) whose mark guard has saved as ``mark``."""
    made = await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(
        kind=TRAILING, trigger_price="0", trail_pct="10", activation_price="0.70")), metadata=AUTH)
    execute(db_url, "UPDATE triggers SET high_water_mark = %s WHERE id = %s", (Decimal(mark), made.id))
    return made


def stored_mark(db_url: str, trigger_id: str) -> Decimal:
    [(mark,)] = query(db_url, "SELECT high_water_mark FROM triggers WHERE id = %s", (trigger_id,))
    return Decimal(mark)


@pytest.mark.integration
async def test_grpc_patch_resets_the_stored_mark_only_above_it(stubs: Stubs, db_url: str) -> None:
    made = await create_trailing(stubs, db_url, "0.8")

    async def patch(**fields: str) -> tpb.Trigger:
        return await stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(id=made.id, trigger=tpb.Trigger(**fields)),
                                                  metadata=AUTH)

    kept = await patch(trail_pct="20")
    assert (kept.trail_pct, kept.high_water_mark) == ("20", "0.8") and stored_mark(db_url, made.id) == Decimal("0.8")
    kept = await patch(activation_price="0.75")
    assert (kept.activation_price, kept.high_water_mark) == ("0.75", "0.8")
    reset = await patch(activation_price="0.9")
    assert (reset.activation_price, reset.high_water_mark) == ("0.9", "0")
    assert stored_mark(db_url, made.id) == 0
    got = await stubs.triggers.GetTrigger(pb.GetTriggerRequest(id=made.id), metadata=AUTH)
    assert got == reset
    [(after,)] = query(db_url, "SELECT after FROM audit_log ORDER BY id DESC LIMIT 1")
    after = after if isinstance(after, dict) else orjson.loads(after)
    assert (after["activationPrice"], after["highWaterMark"]) == ("0.9", "0")
    # guard's mark rises past the new activation price: a later PATCH keeps it
    execute(db_url, "UPDATE triggers SET high_water_mark = 0.95 WHERE id = %s", (made.id,))
    kept = await patch(activation_price="0.92")
    assert (kept.activation_price, kept.high_water_mark) == ("0.92", "0.95")


@pytest.fixture
async def envoy(control: RunningControl, tmp_path: Path) -> AsyncIterator[Envoy]:
    """The real Envoy in front of this test's control (started in a thread: control serves on this loop)."""
    proxy = await asyncio.to_thread(start_envoy, tmp_path / "envoy", control.port, (TOKEN,))
    try:
        yield proxy
    finally:
        await asyncio.to_thread(proxy.stop)


@pytest.mark.integration
async def test_rest_patch_through_envoy_resets_the_mark(stubs: Stubs, db_url: str, envoy: Envoy) -> None:
    made = await create_trailing(stubs, db_url, "0.8")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=envoy.url, headers=headers, timeout=10) as c:
        async def patch(body: dict[str, Any]) -> dict[str, Any]:
            r = await c.patch(f"/triggers/{made.id}", json=body)
            assert r.status_code == 200, r.text
            out: dict[str, Any] = r.json()
            return out

        kept = await patch({"trailPct": "5"})
        assert (kept["trailPct"], kept["activationPrice"], kept["highWaterMark"]) == ("5", "0.7", "0.8")
        reset = await patch({"activationPrice": "0.90"})
        assert (reset["activationPrice"], reset["highWaterMark"]) == ("0.9", "0")
        assert (await c.get(f"/triggers/{made.id}")).json()["highWaterMark"] == "0"
    assert stored_mark(db_url, made.id) == 0
