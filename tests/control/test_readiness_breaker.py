"""/ready shows the executor's circuit breakers (``tt:breaker:{venue}`` in real Redis) without failing on them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from common.embedded import free_port
from services.control.app import start
from services.control.readiness import SharedResult, describe_breaker, is_ready, summary
from tests.control.conftest import Stubs, make_settings, stubs_for
from tests.control.support import expect
from tests.helpers import eventually
from tradingtools.control.v1 import control_pb2 as pb

OPENED_MS = 1_795_000_000_123  # 2026-11-18T11:06:40.123Z


@pytest.mark.parametrize(("stored", "shown"), [
    ({}, "closed"),
    ({"state": "CLOSED", "failures": "0", "opened_at_ms": "0", "probe_out": "0"}, "closed"),
    ({"state": "CLOSED", "failures": "3"}, "closed (3 recent failures)"),
    ({"state": "OPEN", "failures": "5", "opened_at_ms": str(OPENED_MS)},
     "open since 2026-11-18T11:06:40.123Z after 5 failures"),
    ({b"state": b"OPEN", b"failures": b"5", b"opened_at_ms": b"junk"}, "open after 5 failures"),
    ({"state": "HALF_OPEN", "probe_out": "1"}, "half_open (probe out)"),
    ({"state": "HALF_OPEN", "probe_out": "0"}, "half_open"),
    ({"state": "WEIRD"}, "unknown state 'weird'"),
])
def test_describe_breaker(stored: dict[Any, Any], shown: str) -> None:
    assert describe_breaker(stored) == shown


@pytest.mark.parametrize(("checks", "ready"), [
    ({"postgres": "ok", "redis": "ok", "breaker.insiders": "open since x after 5 failures"}, True),
    ({"postgres": "ok", "redis": "refused", "breaker.paper": "closed"}, False),
    ({"postgres": "ok", "router": "NOT_SERVING"}, False),
])
def test_breakers_do_not_decide_readiness(checks: dict[str, str], ready: bool) -> None:
    assert is_ready(checks) is ready


def test_summary_shows_breaker_states_plainly() -> None:
    assert summary({"postgres": "ok", "redis": "refused", "breaker.insiders": "open since t after 5 failures"}) == (
        "not ready: postgres ok, redis (refused), breaker.insiders open since t after 5 failures")


@pytest.mark.integration
async def test_ready_shows_an_open_breaker_and_stays_ready(stubs: Stubs, redis_client: aioredis.Redis) -> None:
    await redis_client.hset("tt:breaker:insiders", mapping={
        "state": "OPEN", "failures": "5", "opened_at_ms": str(OPENED_MS), "probe_out": "0",
        "updated_ms": str(OPENED_MS)})
    ready = await stubs.probes.GetReady(pb.GetReadyRequest())
    assert ready.status == "READY"
    assert dict(ready.checks) == {"postgres": "ok", "redis": "ok",
                                  "breaker.insiders": "open since 2026-11-18T11:06:40.123Z after 5 failures",
                                  "breaker.paper": "closed"}

    async def breaker_shown() -> str:  # a probe answers from a result at most a second old
        return (await stubs.probes.GetReady(pb.GetReadyRequest())).checks["breaker.insiders"]

    await redis_client.hset("tt:breaker:insiders", mapping={"state": "HALF_OPEN", "probe_out": "1"})
    await eventually(lambda: _equals(breaker_shown(), "half_open (probe out)"), timeout_s=5)

    await redis_client.hset("tt:breaker:insiders", mapping={"state": "CLOSED", "failures": "0", "probe_out": "0"})
    await eventually(lambda: _equals(breaker_shown(), "closed"), timeout_s=5)


async def _equals(got: Awaitable[str], want: str) -> bool:
    return await got == want


@pytest.mark.integration
async def test_without_a_live_venue_only_the_paper_breaker_is_shown(db_url: str, redis_url: str) -> None:
    running = await start(make_settings(db_url, redis_url, insiders_api_url=""))
    stubs = stubs_for(running.port)
    try:
        ready = await stubs.probes.GetReady(pb.GetReadyRequest())
        assert dict(ready.checks) == {"postgres": "ok", "redis": "ok", "breaker.paper": "closed"}
    finally:
        await stubs.channel.close(None)
        await running.stop()


@pytest.mark.integration
async def test_an_unreachable_redis_names_redis_and_the_breakers_as_unknown(db_url: str) -> None:
    running = await start(make_settings(db_url, f"redis://127.0.0.1:{free_port()}/0"))
    stubs = stubs_for(running.port)
    try:
        details = await expect(stubs.probes.GetReady(pb.GetReadyRequest()), grpc.StatusCode.UNAVAILABLE,
                               "not ready: postgres ok, redis (")
        assert "breaker.insiders unknown (" in details and "breaker.paper unknown (" in details
    finally:
        await stubs.channel.close(None)
        await running.stop()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_probes_share_one_check_in_flight_and_its_result_for_a_second() -> None:
    clock, started, release = _Clock(), [], asyncio.Event()

    async def check() -> int:
        started.append(clock.now)
        await release.wait()
        return len(started)

    shared = SharedResult(check, max_age_s=1.0, clock=clock)
    waiting = [asyncio.ensure_future(shared.get()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [1] * 50 and len(started) == 1
    clock.now += 0.999
    assert await shared.get() == 1  # still under a second old
    clock.now += 0.001
    assert await shared.get() == 2 and started == [100.0, 101.0]


async def test_a_probe_that_gives_up_does_not_cancel_the_shared_check() -> None:
    release = asyncio.Event()

    async def check() -> str:
        await release.wait()
        return "done"

    shared = SharedResult(check, clock=_Clock())
    impatient = asyncio.ensure_future(shared.get())
    patient = asyncio.ensure_future(shared.get())
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert await patient == "done"
