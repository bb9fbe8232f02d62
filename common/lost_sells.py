"""SELLs that ended LOST and may still have sold, as every sizing of a SELL counts them.

The contract ends an order LOST after three not-founds and releases what it reserved, yet a LIVE SELL the venue
filled and then failed to find has sold its shares. Until the venue's count of the position has been read after it,
its unfilled size is counted as being sold, like a SELL under way, by the executor (``order_sql._SELLING``), the
router (``store_sql.LOAD``) and guard (``trigger_sql.FACTS``): a SELL sized meanwhile on the booked shares would sell
those shares again. The count is read after it once a reconciliation that compared the position (none is while an
order of it is in flight) took its count at least :data:`GRACE_S` after its end (the shares settle on-chain seconds
after a match: an earlier count may lack the sale), or once corrections down from counts taken after its end add up to
what every LOST SELL of the position's life did not fill (the counts had their sales: one correction clears them all
or none). Both go by when the venue took its count (``positions.reconciled_at``
and the correction fills' time: its ``asOf``, never later than the read; a count of the second the SELL ended is after
it, ``asOf`` having a second's resolution): a lagging count, however late it is read, is as old as it is. Only SELLs
that ended in the position's current life (one admitted before it opened waited, sized by its fraction, for the BUY
that opened it), in the last :data:`WINDOW_S`, count (a wallet whose token stays busy is reconciled late; past that,
the periodic rounds have read it). They are read from ``lost_sells``, where a trigger notes them (migration 0830).
Settlement holds a position back while one counts (:func:`selling`): settled from the shares booked, a position whose
SELL did sell realized a payout for shares it no longer held and asked to redeem them; reconciliation compares such a
position's token even once its market resolved (the venue still lists it, redeemable), and the settlement follows.
"""

from __future__ import annotations

GRACE_S = 10  # the executor's reconciling.SETTLING_GRACE_S
WINDOW_S = 900

def lost_of(wallet: str, assets: str, window: bool = True) -> str:
    """A FROM item: the LIVE SELLs ended LOST in the last :data:`WINDOW_S` (``l``; every one kept, a day's, when not
    ``window``) of ``wallet`` (an SQL expression) and the assets ``assets`` (an SQL condition on ``y.asset_id``), with
    their orders (``o``). They are probed by wallet and asset apart from the join: planned on statistics that saw the
    table empty, the join walked its primary key (the order it wants for ``orders``) once per wallet."""
    recent = f" AND y.terminal_at > now() - make_interval(secs => {WINDOW_S})" if window else ""
    return (f"(SELECT * FROM lost_sells y WHERE y.follower_wallet_id = {wallet} AND y.asset_id {assets}{recent}"
            " OFFSET 0) l JOIN orders o ON o.client_order_id = l.client_order_id")


def unseen(x: str, window: bool = True) -> str:
    """The SQL condition that the LOST SELL ``l``/``o`` (:func:`lost_of`, of the same ``window``) of position row
    ``x`` (of the same wallet and asset) may have sold shares the venue's count has not shown yet."""
    return (f"o.size IS NOT NULL AND l.terminal_at >= {x}.opened_at"
            f" AND ({x}.reconciled_at IS NULL OR {x}.reconciled_at < l.terminal_at + make_interval(secs => {GRACE_S}))"
            f" AND coalesce((SELECT sum(f.size) FROM fills f WHERE f.order_id = 'reconcile_' || {x}.id"
            f" AND f.side = 'SELL' AND f.fill_time >= date_trunc('second', l.terminal_at)), 0)"
            # what every LOST SELL of the position's life may have sold: a correction clears them all or none
            f" < (SELECT sum(greatest(o.size - o.filled_size, 0))"
            f" FROM {lost_of(f'{x}.follower_wallet_id', f'= {x}.asset_id', window)}"
            f" WHERE l.terminal_at >= {x}.opened_at)")


def selling(x: str, window: bool = True) -> str:
    """The SQL condition that position row ``x`` has a LOST SELL that still counts as selling (:func:`unseen`; of any
    age kept when not ``window``)."""
    lost = lost_of(f"{x}.follower_wallet_id", f"= {x}.asset_id", window)
    return f"EXISTS (SELECT 1 FROM {lost} WHERE {unseen(x, window)})"


def uncounted(x: str) -> str:
    """The SQL condition that position row ``x`` has a LOST SELL, of any age kept, that may have sold shares no count
    of the venue showed (:func:`unseen`): settled now, on the shares booked, it may be paid and redeem shares sold."""
    return selling(x, window=False)


def awaited(x: str, condition: str) -> str:
    """The SQL condition that settlement holds position row ``x`` back for a count (:func:`selling`), which
    reconciliation takes even once its market resolved: but once its wallet's redemption of the market (``condition``,
    an SQL expression; NULL: none recorded) is recorded, whose count may lack what that redemption took."""
    return (f"({selling(x)} AND NOT EXISTS (SELECT 1 FROM redemptions d"
            f" WHERE d.follower_wallet_id = {x}.follower_wallet_id AND d.condition_id = {condition}))")


def market_of(x: str) -> str:
    """The SQL expression of the condition id of position row ``x``'s recorded resolution (NULL: none)."""
    return f"(SELECT ra.condition_id FROM resolved_assets ra WHERE ra.asset_id = {x}.asset_id LIMIT 1)"
