"""Tops of book as ingest's tick gate takes them, for the band tests of guard and ingest."""

from __future__ import annotations

from decimal import Decimal

from services.ingest.tickgate import Top


def top(bid: str) -> Top:
    """A fresh top at ``bid``, the ask a cent above, no last trade, tick 0.01."""
    return (Decimal(bid), Decimal(bid) + Decimal("0.01"), None, Decimal("0.01"), False)
