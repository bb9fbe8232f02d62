"""A redemption call that is the venue breaker's half-open probe and ends without an answer (the adapter raised, or
the round was cut short by a storage failure and cancelled its calls) gives the probe back: the next call, an order's
POST or another redemption, probes. Kept, the probe is out for good and the breaker, which the redeemer shares with
the LIVE orders, refuses every POST until a restart: each copy waits and ends FAILED BREAKER_OPEN.

Real PostgreSQL (the redemption rows) and Redis (the redemption events); the venue is a stand-in that raises or
hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal as D
from typing import Any

import pytest

from common.streams import REDEMPTION_EVENTS, DurableLog, create_stream_redis
from services.executor.adapters.breaker_gate import BreakerGate
from services.executor.adapters.redemption_store import RedemptionRow, RedemptionStore
from services.executor.domain import breaker as br
from services.executor.domain import redemption as rd
from services.executor.ports import Answer
from services.executor.redeeming import Redeemer
from tests.executor.conftest import CONDITION, rows
from tests.executor.scripted_venue import NullRedis
from tests.helpers import eventually

pytestmark = pytest.mark.integration

OPEN_MS = 50


class RaisingApi:
    """A venue adapter that fails with an error of its own on every POST (a bug, an unexpected exception)."""

    def __init__(self) -> None:
        self.posts = 0

    async def redeem(self, key: str, wallet_id: str, condition_id: str, neg_risk: bool,
                     amounts: Sequence[D]) -> Answer:
        self.posts += 1
        raise RuntimeError("adapter bug")

    async def redemption(self, redeem_id: str) -> Answer:
        raise RuntimeError("adapter bug")


class HangingApi:
    """A venue whose POSTs are never answered."""

    def __init__(self) -> None:
        self.posts = 0

    async def redeem(self, key: str, wallet_id: str, condition_id: str, neg_risk: bool,
                     amounts: Sequence[D]) -> Answer:
        self.posts += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def redemption(self, redeem_id: str) -> Answer:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class FailingAfterAttempts(RedemptionStore):
    """Records the attempts, then fails to store any answer (a storage outage in the middle of a round)."""

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.saves = 0

    async def save_many(self, changes: Sequence[tuple[RedemptionRow, rd.Redemption]],
                        method: str) -> dict[str, list[str]]:
        self.saves += 1
        if self.saves > 1:
            raise OSError("storage outage")
        return await super().save_many(changes, method)


@pytest.fixture
async def gate() -> AsyncIterator[BreakerGate]:
    """The venue's breaker, shared by the orders and the redeemer (its mirror in Redis is not what is tested)."""
    g = BreakerGate("INSIDERS", NullRedis(), br.BreakerConfig(threshold=1, open_ms=OPEN_MS),
                    lambda: time.time_ns() // 1_000_000)
    await g.load()
    try:
        yield g
    finally:
        await g.close()


@pytest.fixture
async def events(redis_url: str) -> AsyncIterator[DurableLog]:
    sr = create_stream_redis(redis_url, block_s=0.2)
    try:
        yield DurableLog(sr, REDEMPTION_EVENTS, block_ms=50)
    finally:
        await sr.aclose()


def _pending(db_url: str, *wallets: str) -> None:
    for w in wallets:
        rows(db_url, "INSERT INTO redemptions (follower_wallet_id, condition_id, wallet, redemption_key, state, shares)"
                     " VALUES (%s, %s, %s, %s, 'PENDING', 100) RETURNING 1",
             w, CONDITION, "0x" + "1" * 40, f"rk_{w}")


async def _half_open(gate: BreakerGate) -> None:
    """The venue failed: the breaker opens, and its open period ends (the next call is the probe)."""
    gate.record(failure=True)
    assert not gate.closed
    await asyncio.sleep(OPEN_MS * 2 / 1000)


async def test_a_redemption_probe_the_adapter_raised_on_lets_the_next_call_probe(
        pool: Any, db_url: str, gate: BreakerGate, events: DurableLog) -> None:
    _pending(db_url, "w_1")
    api = RaisingApi()
    redeemer = Redeemer(RedemptionStore(pool), api, gate, events)
    await _half_open(gate)
    assert await redeemer.round() == 1
    assert api.posts == 1  # the redemption's POST was the probe
    assert rows(db_url, "SELECT state, reason FROM redemptions") == [("PENDING", "INTERNAL_ERROR")]
    # an order's POST may probe now: the venue is not refused for good
    admission = gate.admit()
    assert admission.allowed and admission.probe


async def test_a_redemption_probe_cancelled_with_its_round_lets_the_next_call_probe(
        pool: Any, db_url: str, gate: BreakerGate, events: DurableLog) -> None:
    _pending(db_url, "w_1", "w_2")
    api = HangingApi()
    redeemer = Redeemer(FailingAfterAttempts(pool), api, gate, events)
    await _half_open(gate)
    # one POST is the probe and waits for its answer; the other is refused by the breaker at once, and storing that
    # fails: the round ends, cancelling the probe
    with pytest.raises(OSError):
        await asyncio.wait_for(redeemer.round(), 5)
    assert api.posts == 1
    await eventually(lambda: gate.admit().allowed, timeout_s=1.0)


async def test_a_redemption_refused_while_an_order_probes_is_tried_again_after_its_backoff(
        pool: Any, db_url: str, gate: BreakerGate, events: DurableLog) -> None:
    """The probe's verdict comes within a request's time: a redemption refused meanwhile waits its backoff, not the
    hour a breaker with no open period left to count reports."""
    _pending(db_url, "w_1")
    api = RaisingApi()
    redeemer = Redeemer(RedemptionStore(pool), api, gate, events)
    await _half_open(gate)
    assert gate.admit().probe  # an order's POST is the probe, its answer not in yet
    assert await redeemer.round() == 1
    assert api.posts == 0
    [(reason, wait_s)] = rows(db_url, "SELECT reason, extract(epoch FROM next_attempt_at - now())::float8"
                                      " FROM redemptions")
    assert reason == "BREAKER_OPEN"
    assert wait_s < 10  # RETRY_BACKOFF's first step (1 s, jittered), not 3600 s
