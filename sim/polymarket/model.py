"""Simulated Polymarket entities (markets, trades) and how each API prints them."""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.decimals import fmt


def random_hex(n_bytes: int, rng: random.Random | None = None) -> str:
    """``0x`` + 2·n lower-case hex digits."""
    raw = rng.randbytes(n_bytes) if rng is not None else secrets.token_bytes(n_bytes)
    return "0x" + raw.hex()


def random_token_id(rng: random.Random | None = None) -> str:
    """A 77-digit decimal token id."""
    r = rng or random.Random(secrets.randbits(64))
    return str(r.randrange(10**76, 10**77))


def mixed_case(address: str, rng: random.Random | None = None) -> str:
    """An address in mixed case, as RTDS prints checksummed wallets."""
    r = rng or random.Random(address)
    return "0x" + "".join(c.upper() if c.isalpha() and r.random() < 0.5 else c for c in address[2:].lower())


def num(value: Decimal) -> float | int:
    """A JSON number as RTDS and data-api print amounts (they are floats on the wire)."""
    return int(value) if value == value.to_integral_value() else float(value)


@dataclass
class SimMarket:
    """A binary market: condition id, two tokens, trading rules."""

    condition_id: str
    tokens: tuple[str, str]
    outcomes: tuple[str, str] = ("Yes", "No")
    tick_size: Decimal = Decimal("0.01")
    min_order_size: Decimal = Decimal("5")
    neg_risk: bool = False
    closed: bool = False
    accepting_orders: bool = True
    slug: str = "sim-market"
    event_slug: str = "sim-event"
    title: str = "Will the simulator behave?"
    winner: str = ""
    end_date_iso: str = ""  # e.g. "2026-03-01T00:00:00Z"; printed as null when unset

    def outcome_of(self, token_id: str) -> tuple[str, int]:
        """(outcome label, index) of a token."""
        idx = self.tokens.index(token_id) if token_id in self.tokens else 0
        return self.outcomes[idx], idx

    def rest(self) -> dict[str, Any]:
        """CLOB ``GET /markets/{condition_id}`` body (numbers for tick/min size, like the venue)."""
        return {
            "enable_order_book": True, "active": True, "closed": self.closed, "archived": False,
            "accepting_orders": self.accepting_orders, "minimum_order_size": num(self.min_order_size),
            "minimum_tick_size": num(self.tick_size), "condition_id": self.condition_id,
            "question": self.title, "market_slug": self.slug, "neg_risk": self.neg_risk,
            "end_date_iso": self.end_date_iso or None,
            "tokens": [{"token_id": t, "outcome": o, "winner": t == self.winner,
                        "price": (1 if t == self.winner else 0) if self.closed and self.winner else 0.5}
                       for t, o in zip(self.tokens, self.outcomes, strict=True)],
            "tags": ["sim"],
        }


@dataclass
class SimTrade:
    """One fill of one wallet, as the chain would settle it."""

    wallet: str
    asset: str
    side: str
    price: Decimal
    size: Decimal
    tx_hash: str
    condition_id: str = ""
    outcome: str = "Yes"
    outcome_index: int = 0
    slug: str = "sim-market"
    event_slug: str = "sim-event"
    title: str = "Will the simulator behave?"
    timestamp_s: int = field(default_factory=lambda: int(time.time()))
    fee: Decimal | None = None
    taker: bool = True
    activity_type: str = "TRADE"
    usdc_size: Decimal | None = None

    def rtds_payload(self) -> dict[str, Any]:
        """The ``activity`` payload: numbers, mixed-case wallet, seconds timestamp."""
        payload: dict[str, Any] = {
            "asset": self.asset, "bio": "", "conditionId": self.condition_id, "eventSlug": self.event_slug,
            "icon": "", "name": "", "outcome": self.outcome, "outcomeIndex": self.outcome_index,
            "price": num(self.price), "profileImage": "", "proxyWallet": mixed_case(self.wallet),
            "pseudonym": "", "side": self.side, "size": num(self.size), "slug": self.slug,
            "timestamp": self.timestamp_s, "title": self.title, "transactionHash": self.tx_hash,
        }
        if self.fee is not None:
            payload["fee"] = num(self.fee)
        return payload

    def activity_row(self) -> dict[str, Any]:
        """A data-api ``/activity`` row (lower-case wallet)."""
        trade = self.activity_type == "TRADE"
        usdc = self.usdc_size if self.usdc_size is not None else self.price * self.size
        return {
            "proxyWallet": self.wallet.lower(), "timestamp": self.timestamp_s, "conditionId": self.condition_id,
            "type": self.activity_type, "size": num(self.size), "usdcSize": num(usdc),
            "transactionHash": self.tx_hash, "price": num(self.price) if trade else 0,
            "asset": self.asset if trade else "", "side": self.side if trade else "",
            "outcomeIndex": self.outcome_index if trade else 999, "title": self.title, "slug": self.slug,
            "icon": "", "eventSlug": self.event_slug, "outcome": self.outcome if trade else "",
            "name": "", "pseudonym": "", "bio": "", "profileImage": "", "profileImageOptimized": "",
        }

    def trades_row(self) -> dict[str, Any]:
        """A data-api ``/trades`` row (no ``type``/``usdcSize``)."""
        row = self.activity_row()
        for key in ("type", "usdcSize"):
            row.pop(key)
        return row

    def describe(self) -> str:
        """Short text for logs."""
        return f"{self.wallet[:10]} {self.side} {fmt(self.size)}@{fmt(self.price)} {self.tx_hash[:10]}"
