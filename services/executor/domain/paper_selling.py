"""A paper SELL against the wallet's paper holding, as the live venue answers it (pure: time is passed in).

The live venue refuses a SELL of more shares than the wallet holds, whole (``400 INVALID_ORDER_NOT_ENOUGH_BALANCE``,
nothing filled), and the shares a match took are gone from the balance at once. The paper venue does the same with
the wallet's PAPER position less its paper SELLs in flight: filled by the paper venue, not booked yet.
:class:`PaperSelling` keeps what this process's paper SELLs filled until their booking shows (a result an earlier
process kept is read from Redis instead).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import ZERO, fmt
from services.executor.domain import venue_orders as v

NOT_ENOUGH_BALANCE = "INVALID_ORDER_NOT_ENOUGH_BALANCE"
KEEP_MS = 60_000  # a fill kept in memory this long is forgotten (its kept result still counts, read from Redis)

Key = tuple[str, str]  # (wallet id, token id)


@dataclass(frozen=True, slots=True)
class PaperHolding:
    """A wallet's PAPER shares of a token as booked, and its paper SELLs under way (sent or about to be): client
    order id → shares of its fill booked so far. Read in one statement: the shares a SELL sold are in ``held`` once
    its order has left ``selling`` (booked in the transaction that ends it)."""

    held: Decimal
    selling: Mapping[str, Decimal]


def in_flight(selling: Mapping[str, Decimal], filled: Mapping[str, Decimal], own: str) -> Decimal:
    """Shares the SELLs under way (``selling``: id → booked) sold at the paper venue (``filled``: id → filled) and
    not booked yet; ``own`` (the order asking) is left out. A SELL not answered yet sold nothing."""
    total = ZERO
    for coid, booked in selling.items():
        if coid != own:
            total += max(filled.get(coid, ZERO) - booked, ZERO)
    return total


def balance_answer(held: Decimal, selling: Decimal, req: v.PlaceRequest) -> v.VenueError | None:
    """The live venue's answer to ``req`` on the wallet's balance: None when the order may fill (a BUY, whose USD
    the paper venue does not count; a SELL within ``held`` less ``selling``, the shares in flight), else the whole
    order refused ``INVALID_ORDER_NOT_ENOUGH_BALANCE``. A size that is not positive is left to the fill's checks."""
    if req.side != "SELL" or req.size is None or req.size <= 0:
        return None
    balance = max(held - selling, ZERO)
    if req.size <= balance:
        return None
    return v.VenueError("http", 400, NOT_ENOUGH_BALANCE,
                        f"not enough balance / allowance: the balance is not enough -> balance: {fmt(balance)}, "
                        f"order amount: {fmt(req.size)} (paper shares: {fmt(held)} held, {fmt(selling)} of them "
                        "being sold)")


@dataclass(slots=True)
class _Fill:
    shares: Decimal
    at_ms: int
    seq: int  # recorded after :meth:`PaperSelling.mark` returned less than this


class PaperSelling:
    """What this process's paper SELLs filled, per (wallet, token), until their booking shows.

    Take :meth:`unbooked` and :meth:`record` with no await between them: with one event loop, concurrent SELLs of a
    wallet's token then see each other's fills."""

    def __init__(self, keep_ms: int = KEEP_MS) -> None:
        self.keep_ms = keep_ms
        self._fills: dict[Key, dict[str, _Fill]] = {}
        self._seq = 0
        self._sweep_at_ms = 0

    def mark(self) -> int:
        """Taken right before a :class:`PaperHolding` is read: the fills recorded up to now are in that read."""
        return self._seq

    def filled(self, key: Key, coids: Collection[str]) -> dict[str, Decimal]:
        """The shares each of ``coids`` filled, of those kept."""
        kept = self._fills.get(key)
        if not kept:
            return {}
        return {c: f.shares for c in coids if (f := kept.get(c)) is not None}

    def unbooked(self, key: Key, holding: PaperHolding, mark: int, stored: Mapping[str, Decimal], own: str) -> Decimal:
        """Shares of ``key`` sold at the paper venue and not in ``holding`` (read after ``mark``): the fills kept, or
        ``stored`` (results kept in Redis) for a SELL under way that has none kept. A fill recorded before the read
        whose order is no longer under way is booked: it is forgotten. One recorded since is counted whole unless
        the read has its order (an order inserted after the read began is not in it, nor booked)."""
        kept = self._fills.get(key, {})
        for coid in [c for c, f in kept.items() if f.seq <= mark and c not in holding.selling]:
            del kept[coid]
        if not kept:
            self._fills.pop(key, None)
        selling = {**{c: ZERO for c in kept}, **holding.selling}
        return in_flight(selling, {**stored, **{c: f.shares for c, f in kept.items()}}, own)

    def record(self, key: Key, coid: str, shares: Decimal, now_ms: int) -> None:
        """A paper SELL filled ``shares`` (none: nothing to keep)."""
        self._sweep(now_ms)
        if shares > 0:
            self._seq += 1
            self._fills.setdefault(key, {})[coid] = _Fill(shares, now_ms, self._seq)

    def forget(self, key: Key, coid: str) -> None:
        """Drop one SELL's fill (its result was not kept as recorded: Redis has whatever was kept)."""
        kept = self._fills.get(key)
        if kept is not None and kept.pop(coid, None) is not None and not kept:
            del self._fills[key]

    def _sweep(self, now_ms: int) -> None:
        """Drop fills kept ``keep_ms`` now and then (a token whose wallet sells no more is never read again)."""
        if now_ms < self._sweep_at_ms:
            return
        self._sweep_at_ms = now_ms + self.keep_ms
        for key in list(self._fills):
            kept = {c: f for c, f in self._fills[key].items() if now_ms - f.at_ms < self.keep_ms}
            if kept:
                self._fills[key] = kept
            else:
                del self._fills[key]

    def __len__(self) -> int:
        """Fills kept (old ones until the next sweep)."""
        return sum(len(kept) for kept in self._fills.values())
