"""What a copied SELL of one subscription may sell of a wallet's position that several of its subscriptions bought
(pure): the router sizes a copy by it, the executor a copy it sizes after the wallet's BUY in flight is answered.

A SELL takes its own subscription's part first and the rest from every other part in proportion (the executor's
``domain/subscription_shares.py``). So of the SELLs in flight only other subscriptions' copies are set aside from a
part, each up to its own subscription's part (:func:`others_own`); what they may sell beyond it, and every other
SELL in flight, may come off this part. Never more than the wallet's shares not being sold. What no copy of
another subscription could ever sell the copy sells too (:func:`with_leftovers`): the other parts' sub-cent leftovers
of a proportional take, when each is below a share step on its own (0.005 and 0.0075 are a step in all, but no
copy's to sell), or when they come to less than a share step in all once their copies in flight filled.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from common.decimals import MIN_HELD_SHARES, ZERO

NO_SUBSCRIPTION = ""  # a split's key of the shares no subscription bought (by hand, found at the venue)


def others_own(parts: Mapping[str, Decimal], selling_by: Mapping[str, Decimal] | None,
               subscription_id: str | None) -> Decimal:
    """Shares the SELL copies in flight of other subscriptions than ``subscription_id`` surely take of their own
    parts: each one's (``selling_by``: what they may still sell) up to its part. Whatever order the fills come in,
    each such part loses at least that much (taken by its copies, or before them by other SELLs, which then take it
    from that part rather than from this one)."""
    return sum((min(n, parts.get(sub, ZERO)) for sub, n in (selling_by or {}).items()
                if sub != subscription_id and n > ZERO), ZERO)


def part_sellable(part: Decimal, held: Decimal, selling: Decimal, others_selling: Decimal) -> Decimal:
    """Shares a copy may sell of its subscription's ``part`` of the wallet's ``held`` shares: the part less what
    the SELLs in flight may still sell (``selling``) but what other subscriptions' copies take of their own parts
    (``others_selling``, :func:`others_own`), never more than the wallet's shares not being sold."""
    return min(part - max(ZERO, selling - others_selling), held - selling)


def with_leftovers(sellable: Decimal, wallet: Decimal, parts: Mapping[str, Decimal], subscription_id: str) -> Decimal:
    """``sellable`` of ``subscription_id``'s part, or all of the wallet's shares not being sold (``wallet``) when no
    copy of another subscription could ever sell what the other ``parts`` keep: each is below a share step on its
    own (its copies hold none), or they keep less than a share step of ``wallet`` in all (once their copies in
    flight filled). A part of a share step or more stays its own copies' to sell."""
    if wallet - sellable < MIN_HELD_SHARES:
        return wallet
    return wallet if all(n < MIN_HELD_SHARES for sub, n in parts.items() if sub != subscription_id) else sellable
