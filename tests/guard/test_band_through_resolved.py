"""What guard tells ingest it has read (``through_ns``) covers only ticks ingest's gate stamped in order: a
MARKET_RESOLVED tick that ingest's resolution recorder appends (stamped when the resolution was received) may
come before gate ticks stamped earlier, and must not end ingest's narrowing by them (real coordinator and gate)."""

from __future__ import annotations

from decimal import Decimal

from common.bands import BandMessage, BandMeta, encode
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tests.guard.inprocess import NOW_NS, in_process_guard
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
A = "asset-a"
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE


async def test_a_resolution_tick_appended_by_the_recorder_does_not_say_earlier_gate_ticks_were_read() -> None:
    guard, _store = in_process_guard([TriggerSpec("r", A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=D("10"),
                                                  high_water_mark=D("0.50"))], stub_fires=True)
    band = guard.engine.published_band(A)
    assert band is not None
    gate = TickGate(heartbeat_s=3600)
    gate.load(BandMeta("e", 1, 0, 60.0), {A: encode(band)}, NOW_NS - 20 * MS)
    log: list[mpb.PriceTick] = []

    def send(bid: str, at_ns: int) -> int:
        stamp = gate.admit(A, PRICE, top(bid), at_ns)
        if stamp:
            log.append(mpb.PriceTick(asset_id=A, kind=PRICE, best_bid=bid, best_ask=str(D(bid) + D("0.01")),
                                     mid=str((D(bid) + D(bid) + D("0.01")) / 2), received_time_ns=stamp))
        return stamp

    assert send("0.50", NOW_NS - 10 * MS)  # A's first tick
    guard.handle_tick(log.pop())
    assert send("0.60", NOW_NS - 9 * MS)  # a new high: still in ingest's write queue
    # a REST resolution of another market, received after that tick, appended by the recorder before it
    guard.handle_tick(mpb.PriceTick(asset_id="asset-other", condition_id="cond-other",
                                    kind=mpb.TICK_KIND_MARKET_RESOLVED, winning_asset_id="asset-other",
                                    received_time_ns=NOW_NS - 8 * MS))
    # guard's beat: its band for A is unchanged (it has not read the 0.60)
    assert gate.apply(BandMessage(BandMeta("e", 2, guard.through_ns, 60.0), {}), NOW_NS - 7 * MS) is not None
    # the book falls under the stop level guard has once it read the 0.60 (0.54): the tick must go out
    fell = send("0.50", NOW_NS - 6 * MS)
    for tick in log:
        guard.handle_tick(tick)
    await guard.drain()
    assert fell, "the fall stayed out of the log: guard never fires the stop"
    assert "r" not in guard.engine
