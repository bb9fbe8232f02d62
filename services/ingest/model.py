"""Domain values of ingest (pure, no I/O); the strict field readers every parser uses are
:mod:`common.fields`, re-exported here (``model.text``, ``model.ParseError``...) for ingest's parsers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.fields import (
    BAD_FIELD,
    BAD_NUMBER,
    BAD_SHAPE,
    MAX_MS,
    MAX_SECONDS,
    MISSING_FIELD,
    NOT_JSON,
    TOO_LARGE,
    ParseError,
    address,
    condition_id,
    decimal,
    get,
    integer,
    millis,
    seconds_as_ms,
    side,
    text,
    token_id,
    tx_hash,
)

__all__ = ["BAD_FIELD", "BAD_NUMBER", "BAD_SHAPE", "DATA_API", "DEFAULT_MAX_SKEW_MS", "MAX_MS", "MAX_SECONDS",
           "MISSING_FIELD", "NON_TRADE_TYPES", "NOT_JSON", "PRICE_OUT_OF_RANGE", "REPLAY", "RTDS_ORDERS_MATCHED",
           "RTDS_TRADES", "SERVER_ERROR", "SIZE_NOT_POSITIVE", "TIMESTAMP_OUT_OF_RANGE", "TOO_LARGE", "TRADE", "Fill",
           "ParseError", "TradeRefused", "address", "check_trade", "condition_id", "decimal", "get", "integer",
           "millis", "seconds_as_ms", "side", "text", "token_id", "tx_hash"]

# Parse-error kinds beyond common.fields' (metric attribute ``kind``; UPPER_SNAKE reason codes).
SERVER_ERROR = "SERVER_ERROR"
# A leader trade that parses but fails the sanity checks (refused: never copied).
PRICE_OUT_OF_RANGE = "PRICE_OUT_OF_RANGE"
SIZE_NOT_POSITIVE = "SIZE_NOT_POSITIVE"
TIMESTAMP_OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE"
DEFAULT_MAX_SKEW_MS = 60_000  # a trade may be stamped this far ahead of our clock (TT_TUNE_INGEST_MAX_CLOCK_SKEW_S)

# Feed sources (names of FeedSource enum values without the prefix).
RTDS_TRADES = "RTDS_TRADES"
RTDS_ORDERS_MATCHED = "RTDS_ORDERS_MATCHED"
DATA_API = "DATA_API"
REPLAY = "REPLAY"

TRADE = "TRADE"
NON_TRADE_TYPES = frozenset({"SPLIT", "MERGE", "REDEEM", "CONVERSION", "REWARD", "DEPOSIT", "WITHDRAWAL",
                             "YIELD", "MAKER_REBATE", "TAKER_REBATE", "REFERRAL_REWARD"})
_ZERO = Decimal(0)
_ONE = Decimal(1)


class TradeRefused(ParseError):
    """A leader trade whose amounts or time fail the sanity checks (:func:`check_trade`): never copied."""


def check_trade(price: Decimal, size: Decimal, venue_ms: int, received_ns: int, max_skew_ms: int) -> None:
    """A trade's price is in (0, 1), its size positive and its time in (0, received + ``max_skew_ms``]; raises
    :class:`TradeRefused` with the reason otherwise. (Its notional is price × size, never the feed's figure.)"""
    if not _ZERO < price < _ONE:
        raise TradeRefused(PRICE_OUT_OF_RANGE, f"price {price} is not in (0, 1)")
    if not size > _ZERO:
        raise TradeRefused(SIZE_NOT_POSITIVE, f"size {size} is not positive")
    now_ms = received_ns // 1_000_000
    if not 0 < venue_ms <= now_ms + max_skew_ms:
        raise TradeRefused(TIMESTAMP_OUT_OF_RANGE,
                           f"timestamp {venue_ms} ms is not in (0, now + {max_skew_ms} ms] (now {now_ms})")


@dataclass(frozen=True, slots=True)
class Fill:
    """One activity row of a wallet, normalised from RTDS or data-api (identity not assigned yet)."""

    tx_hash: str
    wallet: str
    asset_id: str
    condition_id: str
    side: str  # "BUY" | "SELL" ("" on non-trade rows)
    price: Decimal
    size: Decimal
    usdc_size: Decimal | None
    fee: Decimal | None
    outcome: str
    outcome_index: int
    market_slug: str
    event_slug: str
    title: str
    activity_type: str  # "TRADE" or a non-trade type such as "REDEEM"
    source: str
    venue_time_ms: int
    received_ns: int

    @property
    def is_trade(self) -> bool:
        """True for a fill of the wallet's order (the only kind that is copied)."""
        return self.activity_type == TRADE

    @property
    def notional(self) -> Decimal:
        """price × size for trades; the reported USDC amount for other rows."""
        if self.is_trade:
            return self.price * self.size
        return self.usdc_size if self.usdc_size is not None else self.price * self.size
