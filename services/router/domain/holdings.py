"""Which shares of a follower wallet's position a copied SELL of one of its subscriptions may sell (pure).

A wallet's position in a token is one, but several of its subscriptions (one per leader) may have bought it: the
executor then keeps each one's part (``positions.subscription_shares``, see the executor's
``domain/subscription_shares.py``). A leader's SELL is copied on its own subscription's part: a leader that closes
sells what its copies bought, never the shares of a subscription whose leader still holds them.

- A position bought by hand (origin MANUAL) with no split kept is no subscription's: read as the executor reads it,
  one part of no subscription (:data:`NO_SUBSCRIPTION`, :func:`by_hand`), so no leader's exit sells it (a copy BUY
  booked on it since keeps a split: its own part). Before, it was sized on the wallet's shares: a leader's close sold
  the follower's manual shares at market.
- No split kept of a position a copy opened (NULL: the position was bought by one subscription; almost every
  position) or found at the venue (EXTERNAL: it may hold the fill of a copy BUY that ended LOST), or one that does
  not add up to the position (an executor before splits booked it since): the SELL is sized on the wallet's shares
  not being sold (by the router's copies, guard's exits, manual SELLs and copies re-sized by the executor in
  flight), for EVERY subscription of the wallet (the opening one, another one, one re-created after its opener was
  stopped): which subscription's shares they are is not known, and its leader's exit must be mirrored.
- A split kept (several subscriptions bought the position): the subscription's own part, less what the wallet's
  SELLs in flight may still sell of it, never more than the wallet's shares not being sold (the executor never
  sells more than the wallet holds). A SELL takes its own subscription's shares first and the rest from every other
  part in proportion, so a SELL copy in flight of another subscription is left aside only up to that
  subscription's part (``common.parts``; a copy the executor sent again re-sized, read from its open orders, is its
  original's subscription's, as the executor counts it): what it may sell beyond it, and every SELL not known by
  subscription, count against the part in full: guard's exits and manual SELLs (they reserve nothing in Redis: the
  router reads them from the executor's open orders, ``adapters/store_sql.LOAD``, and counts them as the executor
  does, whatever subscription a trigger is of), and a SELL index entry written before subscriptions were kept. A
  subscription with no part in it holds none of the wallet's shares: they belong to other subscriptions.
- A part below the share step (what a proportional take leaves) counts as none, as a holding does; when no copy of
  another subscription could sell what the other parts keep (each of them below a share step, their sub-cent
  leftovers, or less than a share step of the wallet's shares not being sold in all), a subscription with a part
  sells of the wallet's shares not being sold: the dust goes with it rather than stay held for ever.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from common.decimals import MIN_HELD_SHARES, fmt
from common.parts import NO_SUBSCRIPTION, others_own, part_sellable, with_leftovers
from services.router.domain.model import ZERO, FollowerState


def by_hand(size: Decimal) -> dict[str, Decimal]:
    """The parts of a position bought by hand (MANUAL) with no split kept: all of no subscription."""
    return {NO_SUBSCRIPTION: size}


def parts_of(kept: Mapping[str, list[str]] | None, size: Decimal, cost_usd: Decimal) -> dict[str, Decimal] | None:
    """Each subscription's shares of a position from its stored split (``{"sub_…": ["shares", "cost"]}``), or None
    when the position is sized on the wallet's shares (none kept, or one that does not add up to it)."""
    if not kept:
        return None
    shares = {k: Decimal(v[0]) for k, v in kept.items()}
    if sum(shares.values(), ZERO) != size or sum((Decimal(v[1]) for v in kept.values()), ZERO) != cost_usd:
        return None
    return shares


def part_of(state: FollowerState, subscription_id: str | None) -> Decimal | None:
    """The subscription's shares of the wallet's position (0 when it has none, or less than the share step), or
    None when the SELL is sized on the wallet's shares (no split kept, or no subscription)."""
    parts = state.held_parts
    if parts is None or subscription_id is None:
        return None
    own = parts.get(subscription_id, ZERO)
    return own if own >= MIN_HELD_SHARES else ZERO


def sellable(state: FollowerState, own: Decimal | None, subscription_id: str | None) -> Decimal:
    """Shares a copied SELL of the subscription may sell: the wallet's not being sold (``own`` None), or of its
    ``own`` part what no SELL in flight may still sell (other subscriptions' copies left aside up to their own
    parts), never more than the wallet's not being sold; all of these when the other parts keep only dust no copy
    of theirs could sell (``common.parts.with_leftovers``)."""
    wallet = state.held_size - state.reserved_sell_size
    if own is None:
        return wallet
    others = others_own(state.held_parts or {}, state.selling_by, subscription_id)
    left = part_sellable(own, state.held_size, state.reserved_sell_size, others)
    return with_leftovers(left, wallet, state.held_parts or {}, subscription_id or "") if own > ZERO else left


def bought_by(state: FollowerState, subscription_id: str) -> bool:
    """Whether the subscription's copies bought shares of the wallet's position: its part of the split kept, or,
    with none kept, the position its copy opened (a manual, external or other subscription's position is not)."""
    parts = state.held_parts
    if parts is not None:
        return parts.get(subscription_id, ZERO) > ZERO
    return state.opened_by is not None and state.opened_by == subscription_id


def none_held(state: FollowerState) -> str:
    """Why a subscription with no part of the wallet's position holds none of its shares (a skip's detail)."""
    held = fmt(state.held_size)
    by_hand_ = (state.held_parts or {}).get(NO_SUBSCRIPTION, ZERO)
    if by_hand_ >= state.held_size:
        return (f"subscription's copies hold none of the follower's {held} shares: bought by hand or outside the "
                "engine")
    if by_hand_ > ZERO:
        return (f"subscription holds none of the follower's {held} shares: {fmt(by_hand_)} bought by hand or outside "
                "the engine, the others by other subscriptions of the wallet")
    return f"subscription holds none of the follower's {held} shares: they belong to other subscriptions of the wallet"
