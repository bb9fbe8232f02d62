"""Settling positions by market resolutions: each resolution ingest streams is applied once (settling again
finds nothing open), and a periodic sweep settles what a resolution left open (a fill booked after it, a position
held back while its wallet had an order of the token in flight, or a resolution this executor never read).

A position held back waits for its order's end: the venue cancels a resting order when its market resolves, a
status query then ends it CANCELLED, and an order the venue no longer finds ends LOST after its not-founds
(``placed_orders``, ``order_runner``); the next sweep after that settles the position with the order's fills
booked. A position whose SELL ended LOST and may have sold is held back until reconciliation compared it with the
venue's count (``settlement_store``). Each position held back is counted (``executor.positions_held_back``) and
logged. In case the venue does not cancel a resting order (a GTC placed at the venue) with its market, which would
hold its position back for ever, each sweep asks the venue to cancel the resting orders that hold back a position of
a resolved market (once per order while this process runs, up to :data:`CANCEL_BATCH` a sweep, those not asked yet;
again next sweep after an answer that says nothing, such as a timeout), counted in ``executor.resolved_order_cancels``
by outcome: the order's status query then ends it CANCELLED (with what it filled), and the sweep after that settles
the position. An order whose cancel the venue refused and that still rests a sweep later is logged as an error and
alerted (``ORDER_CANCEL_REFUSED``), once: its position waits for someone to act."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from opentelemetry import metrics

from common.cancel import reraise_if_cancelling
from common.lease import unleased
from services.executor import alerting
from services.executor.adapters.settlement_store import RestingOrder, SettlementResult, SettlementStore
from services.executor.domain.answer_policy import Verdict, classify
from services.executor.domain.settlement import Resolution
from services.executor.domain.venue_orders import VenueResult
from services.executor.ports import Venue, safe
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)
_meter = metrics.get_meter("tradingtools.executor")
_SETTLED = _meter.create_counter("executor.positions_settled", description="Positions ended by resolution, by state")
_REFUSED = _meter.create_counter("executor.resolutions_refused", description="Resolutions not applied, by reason")
_HELD = _meter.create_counter("executor.positions_held_back",
                              description="Positions a settlement left open while their wallet had an order of the "
                                          "token in flight or a LOST SELL not compared yet (settled by a later sweep)")
_CANCELS = _meter.create_counter("executor.resolved_order_cancels",
                                 description="Cancels asked of orders resting on a resolved market that hold a "
                                             "position back, by outcome (OK, NOT_FOUND, REFUSED, RETRY)")
_UNCOUNTED = _meter.create_counter("executor.positions_settled_without_count",
                                   description="Positions settled on their booked shares with a LOST SELL no count "
                                               "of the venue showed (alerted: SETTLED_WITHOUT_COUNT)")
CANCEL_BATCH = 100  # resting orders not asked yet, asked to cancel per sweep (the rest at the next ones)


class BadResolution(ValueError):
    """A resolution that cannot be applied (no condition, no winner among its tokens)."""


def resolution_of(msg: mpb.MarketResolution) -> Resolution:
    """The domain resolution of a streamed one; :class:`BadResolution` when it names no clear winner."""
    cid = msg.condition_id.lower()
    if not cid.startswith("0x") or len(cid) != 66:
        raise BadResolution(f"condition_id {msg.condition_id[:80]!r} is not 0x + 64 hex")
    assets = tuple(msg.asset_ids)
    if not msg.winning_asset_id or msg.winning_asset_id not in assets:
        raise BadResolution(f"winning_asset_id {msg.winning_asset_id[:80]!r} is not one of the market's tokens")
    return Resolution(cid, assets, msg.winning_asset_id, msg.neg_risk)


@dataclass
class SettlerStats:
    """Counters."""

    resolutions: int = 0
    positions: int = 0
    held: int = 0  # positions left open by a settlement: an order of their token in flight, or a LOST SELL
    refused: int = 0
    sweeps: int = 0
    cancels: int = 0  # cancels asked of orders resting on resolved markets


class Settler:
    """Applies resolutions to positions; tells ``on_redemptions`` when LIVE winners need redeeming."""

    def __init__(self, store: SettlementStore, *, on_redemptions: Callable[[list[str]], None] | None = None,
                 venues: Mapping[str, Venue] | None = None, cancel_batch: int = CANCEL_BATCH,
                 lease_confirmed: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.lease_confirmed = lease_confirmed or unleased  # awaited before each cancel (see OrderRunner)
        self.on_redemptions = on_redemptions
        self.venues = venues or {}  # venue name → client, to cancel orders resting on resolved markets
        self.cancel_batch = cancel_batch
        self.stats = SettlerStats()
        # client order ids of resting orders the venue answered a cancel for (while they rest: then forgotten)
        self._cancel_asked: set[str] = set()
        self._refused: set[str] = set()  # of those, the cancels refused: reported once if they rest a sweep later
        self._reported: set[str] = set()  # refused and reported
        for outcome in ("OK", "NOT_FOUND", "REFUSED", "RETRY"):
            _CANCELS.add(0, {"outcome": outcome})  # exported from the start: an alerting rule reads REFUSED
        _UNCOUNTED.add(0)  # exported from the start: an alerting rule reads it

    async def handle(self, msg: mpb.MarketResolution) -> None:
        """Settle the market of one streamed resolution (the consumer's handler; safe to repeat)."""
        try:
            resolution = resolution_of(msg)
        except BadResolution as exc:
            self.stats.refused += 1
            _REFUSED.add(1, {"reason": "NO_CLEAR_WINNER"})
            log.error("resolution not applied", extra={"condition_id": msg.condition_id, "error": str(exc)})
            return
        await self.settle(resolution)

    async def settle(self, resolution: Resolution) -> SettlementResult:
        """End every open position of the resolved market (those with an order of their token in flight wait for
        a later sweep)."""
        result = await self.store.settle(resolution)
        self.stats.resolutions += 1
        self.stats.positions += len(result.settled)
        for s in result.settled:
            _SETTLED.add(1, {"state": s.state})
        if result.held:
            self.stats.held += len(result.held)
            _HELD.add(len(result.held))
            log.info("positions held back from settlement: an order of their token is in flight, or a SELL of it "
                     "ended LOST and the venue's count after it is not read yet",
                     extra={"condition_id": resolution.condition_id, "positions": len(result.held),
                            "wallets": sorted({w for w, _ in result.held})[:20]})
        if result.settled:
            log.info("market settled", extra={"condition_id": resolution.condition_id,
                                              "winning_asset_id": resolution.winning_asset_id,
                                              "positions": len(result.settled),
                                              "redemptions": len(result.new_redemptions)})
        for wallet, asset, position_id in result.uncounted:
            _settled_without_count(resolution, wallet, asset, position_id)
        if result.new_redemptions and self.on_redemptions is not None:
            self.on_redemptions(result.new_redemptions)
        return result

    async def sweep(self) -> int:
        """Settle every recorded resolution that still has open positions to settle (none with an order of its
        token in flight); returns the positions settled."""
        self.stats.sweeps += 1
        settled = 0
        for resolution in await self.store.resolutions_with_open_positions():
            settled += len((await self.settle(resolution)).settled)
        if self.venues:
            await self.cancel_resting()
        return settled

    async def cancel_resting(self) -> int:
        """Ask the venue to cancel each order resting on a resolved market that holds a position back, once (an
        answer that says nothing of the order is asked again next time); returns the cancels asked now. An order
        whose cancel was refused and that still rests a sweep later (its status queries did not end it meanwhile)
        holds its position back until someone acts: logged as an error and alerted, once."""
        resting = await self.store.resting_orders(sorted(self.venues), sorted(self._cancel_asked),
                                                  limit=self.cancel_batch)
        still = {o.client_order_id for o in resting.asked}
        self._cancel_asked &= still  # forget the orders that ended
        self._refused &= still
        self._reported &= still
        for order in resting.asked:
            if order.client_order_id in self._refused and order.client_order_id not in self._reported:
                self._reported.add(order.client_order_id)
                self._still_resting(order)
        asked = 0
        for order in resting.new:
            venue = self.venues.get(order.venue)
            if venue is None:
                continue
            asked += 1
            self.stats.cancels += 1
            await self.lease_confirmed()
            outcome = self._cancel_outcome(order, await safe(venue.cancel(order.venue_order_id)))
            _CANCELS.add(1, {"outcome": outcome})
            if outcome != "RETRY":
                self._cancel_asked.add(order.client_order_id)
            if outcome == "REFUSED":
                self._refused.add(order.client_order_id)
        return asked

    @staticmethod
    def _cancel_outcome(order: RestingOrder, result: VenueResult) -> str:
        verdict = classify(result).verdict
        outcome = {Verdict.OK: "OK", Verdict.NOT_FOUND: "NOT_FOUND", Verdict.REJECT: "REFUSED"}.get(verdict, "RETRY")
        info = {"client_order_id": order.client_order_id, "venue_order_id": order.venue_order_id,
                "wallet_id": order.follower_wallet_id, "asset_id": order.asset_id,
                "condition_id": order.condition_id, "outcome": outcome}
        if outcome == "OK":
            log.warning("order resting on a resolved market cancelled: its position is settled once it ended",
                        extra=info)
        else:
            log.warning("cancel of an order resting on a resolved market not done", extra={
                **info, "answer": repr(result)[:300]})
        return outcome

    @staticmethod
    def _still_resting(order: RestingOrder) -> None:
        """An order whose cancel the venue refused still rests: its position is held back from settlement (a
        winner's payout not redeemed, a loser's cost held against the caps) until someone cancels it by hand."""
        log.error("order resting on a resolved market still rests after the venue refused to cancel it: its "
                  "position is held back from settlement until someone cancels the order at the venue",
                  extra={"client_order_id": order.client_order_id, "venue_order_id": order.venue_order_id,
                         "wallet_id": order.follower_wallet_id, "asset_id": order.asset_id,
                         "condition_id": order.condition_id, "venue": order.venue})
        alerting.order_cancel_refused(order)

    async def run_sweeps(self, interval_s: float) -> None:
        """:meth:`sweep` every ``interval_s`` until cancelled (a failing round is retried next time)."""
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round retries
                reraise_if_cancelling()
                log.exception("settlement sweep failed")
            await asyncio.sleep(interval_s)


def _settled_without_count(resolution: Resolution, wallet: str, asset: str, position_id: str) -> None:
    """A position settled on its booked shares while a SELL of it that ended LOST may have sold (no count of the venue
    showed it: unreadable past the LOST SELL's window, or its market's redemption recorded): its payout and
    redemption may count shares it no longer held. Logged as an error and alerted (once: a position settles once)."""
    _UNCOUNTED.add(1)
    log.error("position settled on its booked shares with a LOST SELL no count of the venue showed: check it at the "
              "venue", extra={"position_id": position_id, "wallet_id": wallet, "asset_id": asset,
                              "condition_id": resolution.condition_id})
    alerting.settled_without_count(resolution, wallet, asset, position_id)
