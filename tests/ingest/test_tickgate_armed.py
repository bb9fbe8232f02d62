"""The gate and a band's ``armed_ns`` (pure): prices stamped before a trailing stop of the source was armed narrow
nothing, later ones do, and a merged unread price that straddles the arm sends every tick of the asset."""

from __future__ import annotations

from decimal import Decimal

from common.bands import AssetBand, BandMessage, BandMeta, SourceBand, decode, encode
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
A = "asset-a"
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE
# best bid: trailing stops of 10% marked at 0.50 (level 0.45)
BAND = SourceBand(0, D("0.45"), D("0.50"), True, D("0.1"))


def gate_with_rises(*rises: tuple[int, str]) -> TickGate:
    """A gate holding BAND for A (guard read nothing yet), after sending A's first tick and these rises."""
    g = TickGate(heartbeat_s=3600)
    g.load(BandMeta("e", 1, 0, 60.0), {A: encode(AssetBand((BAND,)))}, 0)
    assert g.admit(A, PRICE, top("0.50"), 1 * MS)
    for at, bid in rises:
        assert g.admit(A, PRICE, top(bid), at * MS)
    return g


def armed(g: TickGate, at_ms: int, through_ms: int = 1) -> None:
    """Guard's band after a trailing stop armed at ``at_ms`` (guard has read up to ``through_ms``)."""
    band = AssetBand((BAND._replace(armed_ns=at_ms * MS),))
    assert g.meta is not None
    assert g.apply(BandMessage(BandMeta("e", g.meta.seq + 1, through_ms * MS, 60.0), {A: encode(band)}), 50 * MS)


def test_armed_ns_round_trips_and_older_bands_read_as_zero() -> None:
    band = AssetBand((BAND._replace(armed_ns=123),))
    assert decode(encode(band)) == band
    assert decode(encode(AssetBand((BAND,)))).sources[0].armed_ns == 0


def test_a_price_logged_before_the_arm_narrows_only_lo_and_one_after_it_narrows_both() -> None:
    g = gate_with_rises((2, "0.60"))
    assert g.bands[A].sources[0].hi == D("0.60")  # narrowed by the rise while no stop is newer
    armed(g, 3)
    # guard lifts the stops armed before 3 ms by the 0.60 (their levels rise to 0.60 x 0.9), not the new one (hi)
    assert g.bands[A].sources[0] == BAND._replace(lo=D("0.540"), armed_ns=3 * MS)
    assert g.admit(A, PRICE, top("0.58"), 4 * MS)  # a new high for the stops: it goes out
    assert g.bands[A].sources[0].hi == D("0.58")
    assert not g.admit(A, PRICE, top("0.57"), 5 * MS)


def test_a_merged_price_straddling_the_arm_sends_every_tick_until_guard_read_it() -> None:
    g = gate_with_rises((2, "0.60"), *((at, "0.52") for at in range(4, 12)))  # nine unread: the two oldest merge
    armed(g, 3)
    # unread: the first tick, the 0.60 and the first 0.52 merged (stamped 4 ms), then seven 0.52
    assert g.bands[A].sources[0].hi is None  # neither the 0.60's band nor the published one holds
    assert g.admit(A, PRICE, top("0.51"), 20 * MS)
    armed(g, 3, through_ms=5)  # guard read the merged prices (the 0.51 merged the 5 ms one into them)
    assert g.bands[A].sources[0].hi == D("0.52")
    assert not g.admit(A, PRICE, top("0.515"), 21 * MS)
