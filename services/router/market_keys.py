"""The market a leader trade's exposure is counted in: its condition id; for a trade that came without one, its
token's market (the condition id of the token's market info, cached or else fetched); the token itself when that is
unknown too (``outbound.market_of``)."""

from __future__ import annotations

from collections.abc import Sequence

from common.marketstate import MarketInfo
from services.router.adapters.redis_state import RedisState
from services.router.ports import MarketSource


async def markets_of_tokens(assets: Sequence[str], redis_state: RedisState, markets: MarketSource,
                            infos: dict[str, MarketInfo | None]) -> dict[str, str]:
    """The condition id (lower case) of each token's market, for the tokens whose market is known: from the cached
    market info (one Redis round trip), else resolved as routing the trade would (kept in ``infos`` for it)."""
    if not assets:
        return {}
    view = await redis_state.read_batch([], assets, {})
    out: dict[str, str] = {}
    for asset in assets:
        info = view.markets.get(asset)
        if info is None or not info.condition_id:
            info = infos[asset] = await markets.resolve(asset, "", info, has_book=view.has_book.get(asset, True))
        if info is not None and info.condition_id:
            out[asset] = info.condition_id.lower()
    return out
