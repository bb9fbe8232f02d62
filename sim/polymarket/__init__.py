"""The simulated Polymarket venue: RTDS, CLOB (websocket + REST) and data-api on loopback."""

from sim.polymarket.model import SimMarket, SimTrade, mixed_case, random_hex, random_token_id
from sim.polymarket.venue import PolymarketSim

__all__ = ["PolymarketSim", "SimMarket", "SimTrade", "mixed_case", "random_hex", "random_token_id"]
