"""Which leader trades are copied: trade-wide gates and per-subscription filters.

A rejection is ``(Reason, detail)``; ``None`` means the trade passes.

Rules:
- Trade-wide (same answer for every follower): the market must be open and accepting orders, the
  leader trade must not be too old (venue time; protects against replays of old history), and its price must
  lie within the market's [tick, 1 − tick]. Too old is, for a BUY, older than ``Policy.max_trade_age_ms`` (its
  price is gone); for a SELL, older than ``Policy.max_exit_age_ms`` (hours): an exit delivered late (a backlog
  after an outage, a stall the poller filled) is still mirrored, sized on what the follower holds, since the
  leader's recorded position falls by it whether it is copied or not and no later exit would come.
- Market lists match the trade's condition id exactly and its market or event slug either exactly
  or as a series prefix ending at a ``-`` boundary ("btc-updown-5m" matches
  "btc-updown-5m-1790272200"), case-insensitively. The denylist wins over the allowlist.
- A market that cannot be identified is in neither list's favour for a BUY: the allowlist skips it, and so does a
  denylist when an entry cannot be ruled out by the ids known (a condition id entry when the condition id is
  unknown, a slug entry when no slug is). A SELL there is mirrored, whichever list cannot rule it out, when the
  subscription's copies bought shares of the token (``owns``, ``holdings.bought_by``): an exit of its copy is never
  withheld on a guess (the follower would hold what the leader left). Otherwise it is skipped with the list's
  reason: a SELL is sized on the wallet's shares when no split is kept, and would sell a position bought by hand or
  by another subscription's copies in a market this subscription may never copy.
- A BUY made before the subscription last became ACTIVE (created or resumed) is not copied. Nor is a SELL made then
  (an exit delivered late) when the follower's position in the token opened since, or nothing is held: every share
  the subscription's copies bought since is a copy of a BUY made after it, which the leader still holds (mirrored, it
  sold the copy of the leader's newer BUY). A position held from before (bought before a pause) still follows it.
- Price bounds and the minimum leader notional gate entries (BUYs) only: a leader's exit is
  mirrored whatever its price or size, so a follower is never stuck in a position the leader left.
  ``copySells`` and the market lists apply to SELLs too.
"""

from __future__ import annotations

from decimal import Decimal

from common.decimals import fmt
from services.router.domain.market_rules import within_tick_bounds
from services.router.domain.model import FilterRules, LeaderTrade, MarketRules, Policy, Reason, Side

Rejection = tuple[Reason, str]
_HEX = frozenset("0123456789abcdef")


def trade_gate(trade: LeaderTrade, market: MarketRules, policy: Policy) -> Rejection | None:
    """Checks that depend only on the trade, the market and the time."""
    if market.closed or not market.accepting_orders:
        state = "closed" if market.closed else "not accepting orders"
        return Reason.MARKET_CLOSED, f"market {trade.condition_id or trade.asset_id} is {state}"
    age_ms = policy.now_ms - trade.venue_time_ms
    exit_ = trade.side is Side.SELL
    max_age_ms = policy.max_exit_age_ms if exit_ else policy.max_trade_age_ms
    if trade.venue_time_ms > 0 and age_ms > max_age_ms:
        return (Reason.TRADE_TOO_OLD, f"leader {'SELL' if exit_ else 'trade'} is {age_ms / 1000:.1f}s old, "
                                      f"max {'exit ' if exit_ else ''}age {max_age_ms / 1000:.1f}s")
    if not within_tick_bounds(trade.price, market.tick_size):
        return (Reason.PRICE_OUTSIDE_TICK_BOUNDS,
                f"leader price {fmt(trade.price)} outside [{fmt(market.tick_size)}, "
                f"{fmt(1 - market.tick_size)}] for tick {fmt(market.tick_size)}")
    return None


def before_active(active_since_ms: int, trade: LeaderTrade) -> Rejection | None:
    """A leader BUY made before the subscription last became ACTIVE (created or resumed) is not copied: the
    data-api poller brings a maker fill up to a minute late, and one made while the subscription was paused or
    did not exist is no trade the follower asked to copy. A SELL made then is an exit (``exit_before_active``). The
    venue stamps trades to the second: one stamped with the second it became active in is copied."""
    if trade.side is Side.BUY and made_before_active(active_since_ms, trade):
        return (Reason.TRADE_BEFORE_ACTIVE,
                f"leader BUY made {(active_since_ms - trade.venue_time_ms) / 1000:.1f}s before the subscription "
                "became active")
    return None


def made_before_active(active_since_ms: int, trade: LeaderTrade) -> bool:
    """Whether the trade was made before the second the subscription last became ACTIVE in (unknown times: no)."""
    return 0 < trade.venue_time_ms < active_since_ms - active_since_ms % 1000


def exit_before_active(active_since_ms: int, trade: LeaderTrade, held: Decimal, opened_ms: int,
                       created_ms: int = 0) -> Rejection | None:
    """A leader SELL made before the subscription last became ACTIVE (``made_before_active``) is not mirrored when it
    was made before the subscription was created (``created_ms``, Unix ms; 0: not known): none of its copies can be
    of the shares that SELL sold, whoever holds the wallet's position (another subscription, the follower by hand);
    nor, made later (during a pause or before a PAPER/LIVE switch), on a position that opened since (``opened_ms``,
    Unix ms; 0: not known) or when nothing is held (``held``): the shares its copies bought since mirror the leader's
    BUYs made after this SELL, which the leader still holds. A position opened before (bought before a pause, or not
    known) follows it."""
    if trade.side is not Side.SELL or not made_before_active(active_since_ms, trade):
        return None
    since = active_since_ms - active_since_ms % 1000
    if made_before_active(created_ms, trade):
        where = "before the subscription was created"
    elif held > 0 and opened_ms < since:
        return None
    else:
        where = f"the follower's position opened {(opened_ms - since) / 1000:.1f}s after it" if held > 0 else \
            "the follower holds none"
    return (Reason.TRADE_BEFORE_ACTIVE,
            f"leader SELL made {(active_since_ms - trade.venue_time_ms) / 1000:.1f}s before the subscription became "
            f"active and {where}: it sold no share the subscription's copies bought")


def market_identifiers(trade: LeaderTrade, market: MarketRules) -> tuple[str, str, str]:
    """(condition id, market slug, event slug) of the trade, lower-cased, from the trade or the market info."""
    return ((trade.condition_id or market.condition_id).lower(), (trade.market_slug or market.market_slug).lower(),
            (trade.event_slug or market.event_slug).lower())


def _slug_matches(entry: str, slug: str) -> bool:
    return bool(slug) and (slug == entry or slug.startswith(entry + "-"))


def listed(entries: tuple[str, ...], ids: tuple[str, str, str]) -> str | None:
    """The first entry matching the market (see module rules), or None."""
    condition, market_slug, event_slug = ids
    for entry in entries:
        if entry == condition and condition:
            return entry
        if _slug_matches(entry, market_slug) or _slug_matches(entry, event_slug):
            return entry
    return None


def _is_condition_id(entry: str) -> bool:
    return len(entry) == 66 and entry.startswith("0x") and all(c in _HEX for c in entry[2:])


def unresolved(entries: tuple[str, ...], ids: tuple[str, str, str]) -> str | None:
    """The first entry the market's known ids cannot rule out (see module rules), or None."""
    condition, market_slug, event_slug = ids
    slugged = bool(market_slug or event_slug)
    if condition and slugged:
        return None
    for entry in entries:
        known = bool(condition) if _is_condition_id(entry) else slugged
        if not known:
            return entry
    return None


def market_lists(filters: FilterRules, ids: tuple[str, str, str], *, buying: bool = True,
                 owns: bool = True) -> Rejection | None:
    """Deny- and allowlist check. For a BUY (``buying``), and a SELL of shares the subscription's copies did not buy
    (``owns`` False), a denylist entry the ids cannot rule out denies, and an allowlist the ids cannot rule out
    skips; a SELL of shares they bought is skipped only in a market known to be denied or not allowed."""
    denied = listed(filters.denylist, ids)
    if denied is not None:
        return Reason.MARKET_DENIED, f"market {ids[1] or ids[0]} matches denylist entry {denied!r}"
    guessing = buying or not owns
    unknown = unresolved(filters.denylist, ids) if guessing else None
    if unknown is not None:
        what = "condition id" if _is_condition_id(unknown) else "slug"
        return (Reason.MARKET_DENIED,
                f"market {ids[1] or ids[0] or '?'} has no known {what}: denylist entry {unknown!r} cannot be ruled out")
    if filters.allowlist and listed(filters.allowlist, ids) is None:
        if not guessing and unresolved(filters.allowlist, ids) is not None:
            return None  # an exit of the copy's shares in a market the ids cannot rule out of the allowlist
        return (Reason.MARKET_NOT_ALLOWED,
                f"market {ids[1] or ids[0]} (event {ids[2] or '?'}) is not in the allowlist "
                f"({len(filters.allowlist)} entries)")
    return None


def entry_filters(filters: FilterRules, trade: LeaderTrade) -> Rejection | None:
    """Price bounds and minimum leader notional (BUYs only)."""
    if filters.min_price is not None and trade.price < filters.min_price:
        return Reason.PRICE_BELOW_MIN, f"leader price {fmt(trade.price)} < minPrice {fmt(filters.min_price)}"
    if filters.max_price is not None and trade.price > filters.max_price:
        return Reason.PRICE_ABOVE_MAX, f"leader price {fmt(trade.price)} > maxPrice {fmt(filters.max_price)}"
    if filters.min_leader_trade_usd is not None and trade.notional_usd < filters.min_leader_trade_usd:
        return (Reason.LEADER_TRADE_TOO_SMALL,
                f"leader notional ${fmt(trade.notional_usd)} < minLeaderTradeUsd "
                f"${fmt(filters.min_leader_trade_usd)}")
    return None


def subscription_filters(filters: FilterRules, trade: LeaderTrade, market: MarketRules,
                         ids: tuple[str, str, str] | None = None, *, owns: bool = True) -> Rejection | None:
    """Every per-subscription filter for this trade's side (``ids``: precomputed ``market_identifiers``; ``owns``:
    the subscription's copies bought shares of the token, see ``market_lists``)."""
    if trade.side is Side.SELL and not filters.copy_sells:
        return Reason.COPY_SELLS_DISABLED, "leader SELL not copied: copySells is off"
    if filters.denylist or filters.allowlist:
        rejected = market_lists(filters, ids or market_identifiers(trade, market), buying=trade.side is Side.BUY,
                                owns=owns)
        if rejected is not None:
            return rejected
    if trade.side is Side.BUY:
        return entry_filters(filters, trade)
    return None
