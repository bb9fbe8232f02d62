"""Positions after the copy on the whole stack: a market resolves while ingest and then the executor are killed
with kill -9 in the middle of settling and redeeming; every position is settled once and every winner's
redemption made once (counted per Idempotency-Key at the Insiders fake)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.support import Follower, add_market, address, created, get_json, subscribe, trade, wait_followed
from tests.helpers import eventually_sync
from tools.pipeline import Pipeline

pytestmark = pytest.mark.integration


def _position(p: Pipeline, follower: Follower, asset: str) -> dict[str, Any] | None:
    with p.rest() as rest:
        listed = get_json(rest, f"/positions?wallet={follower.proxy}")["positions"]
    return next((x for x in listed if x["assetId"] == asset), None)


@pytest.mark.timeout(300)
def test_kill_9_of_ingest_and_the_executor_while_settling_and_redeeming_settles_and_redeems_once(
        pipeline: Pipeline) -> None:
    p = pipeline
    leader, market = address(), add_market(pipeline)
    with p.rest() as rest:
        followers = [subscribe(rest, leader, sizing={"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "5"})
                     for _ in range(3)]
    wait_followed(p, leader)
    trade(p, leader, market, price="0.51", size="100")
    eventually_sync(lambda: all(len(created(p, f.wallet_id)) == 1 for f in followers), timeout_s=30,
                    message="the copies")
    eventually_sync(lambda: all((_position(p, f, market.tokens[0]) or {}).get("state") == "POSITION_STATE_OPEN"
                                for f in followers), timeout_s=30, message="the positions booked")
    # the redeem POSTs are taken by the venue but their answers held: a kill lands between sending and recording
    p.sim.call(lambda: setattr(p.sim.insiders.faults, "timeout_delay_s", 30.0))
    p.sim.call(lambda: setattr(p.sim.insiders.faults, "timeout_redeems", len(followers)))

    p.sim.call(p.sim.sim.resolve, market, market.tokens[0])
    ingest = p.kill("ingest")  # while the resolution is being recorded, appended, applied
    p.wait_restarted("ingest", ingest)

    def held_redeems() -> int:
        return p.sim.call(lambda: sum(1 for r in p.sim.insiders.holdings.records
                                      if r.condition_id == market.condition_id and r.outcome == "timeout"))

    eventually_sync(lambda: held_redeems() == len(followers), timeout_s=60, message="every redeem POST sent")
    executor = p.kill("executor")  # each redemption sent, none of their answers recorded
    p.wait_restarted("executor", executor)

    eventually_sync(lambda: all((_position(p, f, market.tokens[0]) or {}).get("state") == "POSITION_STATE_REDEEMED"
                                for f in followers), timeout_s=90, message="every winner redeemed")
    taken = p.sim.call(lambda: dict(p.sim.insiders.holdings.taken()))
    assert {k: v for k, v in taken.items() if k.endswith(market.condition_id)} == {
        f"{f.wallet_id}|{market.condition_id}": 1 for f in followers}
    for f in followers:
        x = _position(p, f, market.tokens[0])
        assert x is not None and x["redemption"]["state"] == "REDEMPTION_STATE_CONFIRMED"
        assert Decimal(x["realizedPnlUsd"]) > 0
        with p.rest() as rest:
            fills = get_json(rest, f"/subscriptions/{f.sub_id}/fills?pageSize=100")["fills"]
        settlement = [x for x in fills if x["orderId"].startswith("settle_")]
        assert len(settlement) == 1 and Decimal(settlement[0]["price"]) == 1  # settled once
