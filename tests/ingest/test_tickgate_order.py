"""The tick gate's unread prices are read through by stamp order: a ``through_ns`` drops exactly the prices stamped up
to it, whatever was merged, forgotten or rebuilt, and the bands come out as if every asset had been walked."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.bands import AssetBand, BandMessage, BandMeta, SourceBand, encode
from services.ingest import tickgate
from services.ingest import unread as unread_prices
from services.ingest.tickgate import TickGate, Top
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
ASSETS = ["a0", "a1", "a2", "a3"]
# a trailing stop of 10 % on the mid, marked at 0.55: a higher mid narrows the band until guard has read it
BAND = AssetBand((SourceBand(1, D("0.495"), D("0.55"), True, D("0.1"), None),))

# (op, asset index, value): op 0 sends a tick of mid 0.50 + value/100, 1 says guard read all but the last `value`
# stamps, 2 forgets the asset
ops = st.lists(st.tuples(st.integers(0, 2), st.integers(0, len(ASSETS) - 1), st.integers(0, 30)),
               max_size=120)


def _top(mid_cents: int) -> Top:
    mid = D("0.50") + D(mid_cents) / 100
    return (mid - D("0.01"), mid + D("0.01"), None, D("0.01"), False)


def _expected_band(gate: TickGate, asset_id: str) -> AssetBand:
    """The published band narrowed by the asset's highest unread mid, or the band itself."""
    unread = gate._rises.get(asset_id)
    band = gate.published[asset_id]
    if not unread:
        return band
    mids = [unread_prices.as_prices(item)[1] for _stamp, item in unread]
    return unread_prices.narrowed(band, [None, max(m for m in mids if m is not None), None])


@settings(max_examples=150, deadline=None)
@given(ops)
def test_a_through_stamp_reads_exactly_the_prices_stamped_up_to_it(steps: list[tuple[int, int, int]]) -> None:
    tickgate_order_min = tickgate._ORDER_MIN
    tickgate._ORDER_MIN = 6  # rebuilt often
    try:
        gate = TickGate()
        gate.load(BandMeta("e", 1, 0, 60.0), {a: encode(BAND) for a in ASSETS}, 0)
        sent: list[int] = []
        forgotten: set[str] = set()  # no longer followed: their bands are left as they were
        seq, now = 1, 1
        for op, index, value in steps:
            asset_id = ASSETS[index]
            now += 1_000
            if op == 0:
                stamp = gate._send(asset_id, _top(value), now, None)
                sent.append(stamp)
            elif op == 1 and sent:
                through = sent[max(0, len(sent) - 1 - value)]
                seq += 1
                gate.apply(BandMessage(BandMeta("e", seq, through, 60.0), {}), now)
                assert all(unread[0][0] > through for unread in gate._rises.values())
            else:
                gate.forget({asset_id})
                forgotten.add(asset_id)
            assert all(gate._rises.values())
            order = set(gate._order)
            assert all((stamp, a) in order for a, unread in gate._rises.items() for stamp, _item in unread)
            assert len(gate._order) <= gate._order_max
            for a in set(ASSETS) - forgotten:
                assert gate.bands[a] == _expected_band(gate, a)
    finally:
        tickgate._ORDER_MIN = tickgate_order_min


def test_a_message_visits_only_the_assets_it_reads() -> None:
    gate = TickGate()
    assets = [f"asset-{i}" for i in range(5_000)]
    gate.load(BandMeta("e", 1, 0, 60.0), {a: encode(BAND) for a in assets}, 0)
    stamps = [gate.admit(a, mpb.TICK_KIND_TICK_SIZE_CHANGE, _top(10), 10 + i) for i, a in enumerate(assets)]
    assert len(gate._rises) == 5_000
    assert gate.apply(BandMessage(BandMeta("e", 2, stamps[1], 60.0), {}), 10_000) == assets[:2]
    assert len(gate._rises) == 4_998 and len(gate._order) == 4_998


@pytest.mark.parametrize("through", [0, 1])
def test_a_new_guard_that_forgets_everything_empties_the_order_too(through: int) -> None:
    gate = TickGate()
    gate.load(BandMeta("e", 1, 0, 60.0), {"a0": encode(BAND)}, 0)
    stamp = gate.admit("a0", mpb.TICK_KIND_TICK_SIZE_CHANGE, _top(10), 5)
    gate.load(BandMeta("e2", 1, through and stamp, 60.0), {"a0": encode(BAND)}, 6)
    assert not gate._rises and not gate._order
