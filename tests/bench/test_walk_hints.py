"""(e)'s background walks: the best bid / ask each ``price_change`` entry carries is the simulated book's top after
the move, as the venue's are, so ingest's books of the walked markets stay in sync (pure: no sockets)."""

from __future__ import annotations

import random

import orjson

from bench._pipeline_guard import LEVEL_SIZE, LEVELS, WALKS, _Walks
from bench._triggers import asset_id
from services.ingest import clob
from services.ingest.books import BookState
from sim.polymarket import PolymarketSim


def _walked_markets(n_markets: int) -> tuple[PolymarketSim, list[tuple[str, str, str]]]:
    """A simulator with (e)'s background markets, laid as ``scenario_e`` lays them."""
    sim = PolymarketSim(seed=1)
    pairs = [(f"0x{0xe0000000 + i:064x}", asset_id(i), asset_id(i + 1)) for i in range(0, 2 * n_markets, 2)]
    for cid, t0, t1 in pairs:
        sim.add_market(condition_id=cid, tokens=(t0, t1), levels=LEVELS, level_size=LEVEL_SIZE)
    return sim, pairs


def test_the_walks_keep_ingests_books_in_sync() -> None:
    sim, pairs = _walked_markets(20)
    books = BookState()
    now_ms = 1
    for _cid, t0, t1 in pairs:
        for token in (t0, t1):
            books.track(token)
            books.apply(clob.parse_event(sim.books.books[token].frame()), now_ms)
    lo, hi = WALKS["inside"]
    walks = _Walks(sim, pairs, random.Random(9), lo_cents=lo, hi_cents=hi)
    lost: set[str] = set()
    for _ in range(2_000):
        _token, text = walks.frame()
        books.apply(clob.parse_event(orjson.loads(text)), now_ms)
        lost.update(books.take_desynced())
    assert sorted(lost) == []
    for _cid, t0, t1 in pairs:
        for token in (t0, t1):
            book, sim_bids, sim_asks = books.books[token], *sim.books.levels(token)
            assert book.synced
            assert (book.best_bid, book.best_ask) == (sim_bids[0][0], sim_asks[0][0])
