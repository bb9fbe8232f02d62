"""Scripted scenarios for the demo and the end-to-end tests: markets, leaders, a trading session, price paths.

A scenario is data first: :func:`demo_markets` describes the markets, :func:`demo_session` builds a
deterministic session (seeded) of leader fills grouped in phases, :func:`guard_paths` the price paths
that walk the books after it. :func:`install_markets`, :func:`play_phase` and :func:`walk_book` apply
them to a running :class:`~sim.polymarket.PolymarketSim` and must run on the simulator's loop (from
another thread: ``SimThread.run(...)``).

The session, for three leaders (``sports``, ``politics``, ``crypto``) and a few unfollowed wallets:
- opening: a $5 trade of each leader in each of its markets, below every follower's minimum
  leader trade (skipped), which puts those markets on ingest's book feed;
- entries: ordinary BUYs on several markets, two same-transaction multi-fills (one with two
  identical fills: distinct leader trades by occurrence), a BUY on a thin book (a depth skip),
  BUYs that filters reject (price above a maximum, a denied market series, too small a trade);
- exits: the sports leader sells half of its position in one market, then the rest (mirrored as
  proportional SELLs), and the crypto leader sells something its follower never bought;
- retry / storm / recovered: BUYs while the Insiders API answers 503 twice (retried), then eight
  times (the executor's circuit breaker opens), then after the breaker's open period (it closes).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from sim.polymarket import PolymarketSim, SimMarket, SimTrade
from sim.polymarket.model import random_hex

TICK = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """A market to create: slugs, title, the mid of its first token, the depth of its book."""

    key: str
    slug: str
    event_slug: str
    title: str
    mid: str
    levels: int = 5
    level_size: str = "5000"


def demo_markets() -> tuple[MarketSpec, ...]:
    """The demo's markets (slugs carry a suffix per run so filters by series prefix are visible)."""
    return (
        MarketSpec("nba", "nba-finals-game-7", "nba-finals", "Will the Celtics win game 7?", "0.55"),
        MarketSpec("ucl", "ucl-final-winner", "champions-league", "Will Real Madrid win the final?", "0.62"),
        MarketSpec("senate", "us-senate-ohio", "us-senate-2026", "Will the incumbent hold Ohio?", "0.41"),
        MarketSpec("fed", "fed-cuts-in-december", "fed-december", "Will the Fed cut rates in December?", "0.30"),
        MarketSpec("btc5m", "btc-updown-5m-1790272200", "btc-updown-5m", "BTC up or down in 5 minutes?", "0.50"),
        MarketSpec("snow", "snow-in-miami-2026", "weather-2026", "Will it snow in Miami this year?", "0.05"),
        MarketSpec("longshot", "favourite-wins-by-ko", "boxing-2026", "Will the favourite win?", "0.95",
                   levels=4),
        MarketSpec("thin", "ligue-1-psg-lyon", "ligue-1", "Will PSG beat Lyon?", "0.50", levels=2,
                   level_size="8"),
        MarketSpec("g-tp", "mavs-make-playoffs", "nba-2026", "Will the Mavs make the playoffs?", "0.40"),
        MarketSpec("g-trail", "lakers-win-title", "nba-2026", "Will the Lakers win the title?", "0.40"),
        MarketSpec("g-sl", "knicks-top-seed", "nba-2026", "Will the Knicks be the top seed?", "0.40"),
    )


def install_markets(sim: PolymarketSim, specs: Iterable[MarketSpec]) -> dict[str, SimMarket]:
    """Create the markets with two-sided books (run on the simulator's loop)."""
    return {s.key: sim.add_market(slug=s.slug, event_slug=s.event_slug, title=s.title, mid=s.mid, levels=s.levels,
                                  level_size=s.level_size) for s in specs}


@dataclass(frozen=True, slots=True)
class LeaderFill:
    """One fill of a leader's order: ``tx`` groups fills of one transaction."""

    leader: str  # a leader key ("sports") or "noise"
    market: str  # a market key
    side: str
    price: Decimal
    size: Decimal
    tx: str
    note: str = ""

    @property
    def notional(self) -> Decimal:
        """price × size."""
        return self.price * self.size


@dataclass
class Phase:
    """A group of fills played back to back; the driver waits for the stack between phases."""

    name: str
    title: str
    fills: list[LeaderFill] = field(default_factory=list)
    insiders_5xx: int = 0  # POSTs answered 503 from the start of the phase
    after_breaker: bool = False  # start once an open circuit breaker may probe again
    wait_books: bool = False  # end once ingest has every market's book


OPENING = {"sports": ("nba", "ucl", "g-tp", "g-trail", "g-sl", "thin"), "politics": ("senate", "fed"),
           "crypto": ("fed", "btc5m", "longshot", "snow")}


def _price(rng: random.Random, mid: str, spread_ticks: int = 3) -> Decimal:
    return Decimal(mid) + TICK * rng.randint(-spread_ticks, spread_ticks)


def demo_session(seed: int = 7) -> list[Phase]:
    """The demo session (about a hundred leader fills), deterministic for a seed."""
    rng = random.Random(seed)
    tx = lambda: random_hex(32, rng)  # noqa: E731 - a tiny local factory
    opening = Phase("opening", "opening trades, below every follower's minimum: skipped, and their markets join "
                               "ingest's book feed", wait_books=True)
    mids = {m.key: Decimal(m.mid) for m in demo_markets()}
    for leader, keys in OPENING.items():
        for key in keys:
            opening.fills.append(LeaderFill(leader, key, "BUY", mids[key], Decimal(5), tx(), "opening trade"))
    entries = Phase("entries", "entries: BUYs, multi-fills, a thin book, filtered trades")
    f = entries.fills
    # ordinary BUYs of the three leaders, interleaved as they would arrive
    for i in range(26):
        f.append(LeaderFill("sports", "nba" if i % 2 == 0 else "ucl", "BUY",
                            _price(rng, "0.55" if i % 2 == 0 else "0.62", 2), Decimal(rng.choice((60, 80, 120, 150))),
                            tx()))
        f.append(LeaderFill("politics", "senate" if i % 3 else "fed", "BUY",
                            _price(rng, "0.41" if i % 3 else "0.30", 2), Decimal(rng.choice((100, 150, 200, 250))),
                            tx()))
        if i % 2 == 0:
            f.append(LeaderFill("crypto", "fed", "BUY", _price(rng, "0.30", 1), Decimal(rng.choice((100, 200))),
                                tx()))
        if i % 4 == 1:
            f.append(LeaderFill("noise", "senate", "BUY", _price(rng, "0.41", 2), Decimal(50), tx(),
                                "unfollowed wallet"))
    # two same-transaction multi-fills: the second has two identical fills (told apart by occurrence)
    multi = tx()
    f += [LeaderFill("sports", "nba", "BUY", Decimal("0.56"), Decimal(100), multi, "multi-fill 1/3"),
          LeaderFill("sports", "nba", "BUY", Decimal("0.56"), Decimal(100), multi, "multi-fill 2/3 (identical)"),
          LeaderFill("sports", "nba", "BUY", Decimal("0.57"), Decimal(40), multi, "multi-fill 3/3")]
    multi2 = tx()
    f += [LeaderFill("politics", "senate", "BUY", Decimal("0.41"), Decimal(120), multi2, "multi-fill 1/2"),
          LeaderFill("politics", "senate", "BUY", Decimal("0.42"), Decimal(80), multi2, "multi-fill 2/2")]
    # positions the guard will watch
    for key in ("g-tp", "g-trail", "g-sl"):
        f.append(LeaderFill("sports", key, "BUY", Decimal("0.41"), Decimal(150), tx(), "a position guard will watch"))
    # a thin book: the copy cannot fill half its size within the slippage tolerance
    f.append(LeaderFill("sports", "thin", "BUY", Decimal("0.51"), Decimal(300), tx(), "thin book"))
    # filters
    f.append(LeaderFill("crypto", "btc5m", "BUY", Decimal("0.50"), Decimal(200), tx(), "denied market series"))
    f.append(LeaderFill("crypto", "btc5m", "BUY", Decimal("0.51"), Decimal(100), tx(), "denied market series"))
    f.append(LeaderFill("crypto", "longshot", "BUY", Decimal("0.96"), Decimal(300), tx(), "price above max"))
    f.append(LeaderFill("crypto", "snow", "BUY", Decimal("0.04"), Decimal(500), tx(), "price below min"))
    f.append(LeaderFill("crypto", "fed", "BUY", Decimal("0.30"), Decimal(20), tx(), "too small a trade"))
    f.append(LeaderFill("noise", "nba", "BUY", Decimal("0.55"), Decimal(500), tx(), "unfollowed wallet"))

    exits = Phase("exits", "exits: the sports leader halves, then closes, its NBA position")
    held = sum((x.size for x in [*opening.fills, *f] if x.leader == "sports" and x.market == "nba"
                and x.side == "BUY"), Decimal(0))
    half = (held / 2).quantize(Decimal(1))
    exits.fills += [
        LeaderFill("sports", "nba", "SELL", Decimal("0.58"), half, tx(), f"leader sells {half} of {held} (half)"),
        LeaderFill("crypto", "ucl", "SELL", Decimal("0.61"), Decimal(100), tx(), "follower holds nothing"),
        LeaderFill("politics", "senate", "BUY", Decimal("0.42"), Decimal(150), tx()),
        LeaderFill("sports", "ucl", "BUY", Decimal("0.62"), Decimal(90), tx()),
    ]
    close = Phase("close", "close: the sports leader sells the rest")
    close.fills.append(LeaderFill("sports", "nba", "SELL", Decimal("0.59"), held - half, tx(),
                                  f"leader sells its last {held - half} (closing)"))
    close.fills.append(LeaderFill("politics", "fed", "BUY", Decimal("0.31"), Decimal(200), tx()))

    retry = Phase("retry", "Insiders API blip: two POSTs answered 503, retried with the same Idempotency-Key",
                  insiders_5xx=2)
    retry.fills.append(LeaderFill("sports", "ucl", "BUY", Decimal("0.62"), Decimal(100), tx()))
    storm = Phase("storm", "Insiders API 5xx storm: the circuit breaker opens", insiders_5xx=8)
    for i in range(2):
        storm.fills.append(LeaderFill("sports", "ucl", "BUY", Decimal("0.62"), Decimal(110 + 10 * i), tx()))
    storm.fills.append(LeaderFill("politics", "senate", "BUY", Decimal("0.42"), Decimal(150), tx()))
    recovered = Phase("recovered", "after the breaker's open period: the half-open probe closes it",
                      after_breaker=True)
    recovered.fills.append(LeaderFill("sports", "ucl", "BUY", Decimal("0.62"), Decimal(140), tx()))
    return [opening, entries, exits, close, retry, storm, recovered]


def publish_fill(sim: PolymarketSim, markets: dict[str, SimMarket], wallets: dict[str, str],
                 fill: LeaderFill) -> SimTrade:
    """Publish one fill on RTDS and the data-api, as the venue does (run on the simulator's loop)."""
    market = markets[fill.market]
    return sim.trade(wallets[fill.leader], market=market, token=market.tokens[0], side=fill.side, price=fill.price,
                     size=fill.size, tx=fill.tx)


async def play_phase(sim: PolymarketSim, markets: dict[str, SimMarket], wallets: dict[str, str], phase: Phase,
                     *, pace_s: float = 0.03, on_fill: Callable[[LeaderFill, SimTrade], None] | None = None,
                     ) -> list[tuple[LeaderFill, SimTrade]]:
    """Publish a phase's fills ``pace_s`` apart (fills of one transaction back to back)."""
    out: list[tuple[LeaderFill, SimTrade]] = []
    previous_tx = ""
    for fill in phase.fills:
        if out and fill.tx != previous_tx:
            await asyncio.sleep(pace_s)
        trade = publish_fill(sim, markets, wallets, fill)
        out.append((fill, trade))
        previous_tx = fill.tx
        if on_fill is not None:
            on_fill(fill, trade)
    return out


@dataclass(frozen=True, slots=True)
class PricePath:
    """Best bids to walk one market's first token through (asks one tick above each)."""

    market: str
    bids: tuple[str, ...]
    note: str


def guard_paths() -> tuple[PricePath, ...]:
    """Price paths that fire a take-profit at 0.50, a 10 % trailing stop armed at 0.45, a stop-loss at 0.33."""
    return (
        PricePath("g-tp", ("0.42", "0.45", "0.48", "0.51"), "rises through the take-profit at 0.50"),
        PricePath("g-trail", ("0.44", "0.48", "0.53", "0.56", "0.52", "0.50"),
                  "rises to 0.56, then falls 10 % from its high"),
        PricePath("g-sl", ("0.38", "0.35", "0.32"), "falls through the stop-loss at 0.33"),
    )


def loss_path() -> PricePath:
    """The politics leader's main market collapses (a loss-stop pauses a follower)."""
    return PricePath("senate", ("0.36", "0.30", "0.22", "0.15"), "collapses from 0.41 to 0.15")


def set_best_bid(sim: PolymarketSim, market: SimMarket, bid: str, *, levels: int = 5, size: str = "5000") -> None:
    """Replace the first token's book around a best bid (run on the simulator's loop)."""
    best = Decimal(bid)
    sim.books.set_book(market.tokens[0], bids=[(best - TICK * i, size) for i in range(levels) if best - TICK * i > 0],
                       asks=[(best + TICK * (i + 1), size) for i in range(levels) if best + TICK * (i + 1) < 1])
