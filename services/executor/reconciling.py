"""Reconciling LIVE wallets' positions with the venue: ``GET /v1/wallets/{id}/positions`` for every wallet with a
LIVE subscription at start, every ``TT_RECONCILE_INTERVAL_S`` (spread over the interval, rate-limited), soon after
an order of the wallet ends UNKNOWN, LOST or CANCELLED, and at once when the venue refuses a SELL for lack of
shares (that SELL is then re-sized once from the venue's count: :mod:`services.executor.resizing`, whose LIVE
re-sizes these rounds run). A malformed or failed answer changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from opentelemetry import metrics

from common.alerts import AlertKind, raise_alert
from common.cancel import reraise_if_cancelling
from common.decimals import ZERO, fmt
from common.dueset import DueSet
from common.marketstate import WATCH_POSITIONS, change_watch_set
from services.executor.adapters.insiders_api import parse_positions
from services.executor.adapters.order_store import Change
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.domain.order_lifecycle import State
from services.executor.domain.reconcile import (
    CLOSED_AT_VENUE,
    CORRECTED,
    EXTERNAL,
    AtVenue,
    Correction,
    CountTime,
    reconcile,
    round_pace,
)
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.ports import PositionsApi
from services.executor.resizing import RESIZE_RETRY_S, RESIZE_WINDOW_S, Resizer, ResizeStats
from services.executor.resizing import RESIZED_PREFIX as RESIZED_PREFIX
from services.executor.resizing import resized_id as resized_id
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)
_meter = metrics.get_meter("tradingtools.executor")
_CORRECTIONS = _meter.create_counter("executor.reconcile_corrections",
                                     description="Positions corrected to the venue's count, by kind")
_FAILURES = _meter.create_counter("executor.reconcile_failures",
                                  description="Wallets not reconciled (venue unreachable or answer malformed)")
_UNTRUSTED = _meter.create_counter("executor.reconcile_untrusted_fields",
                                   description="Fields of usable venue positions answers not trusted (an asOf missing"
                                               " or unreadable, a malformed conditionId), by field")
UNTRUSTED_FIELDS = ("asOf", "positions.asOf", "positions.conditionId")

WAKE_STATES = frozenset({State.UNKNOWN, State.LOST, State.CANCELLED})
MAX_CALLS_PER_S = 10.0  # venue calls a second at most (a wallet asked for soon goes ahead of the rounds)
WALLETS_REFRESH_S = 60.0  # the LIVE wallets are read again this often (or every interval, when shorter)
SETTLING_GRACE_S = 10.0  # a fill booked this recently may not be on-chain yet: its token waits for the next round
AS_OF_STEP_S = 1.5  # the venue's asOf has a second's resolution: a wake this much later reads a count past it


@dataclass
class ReconcileStats(ResizeStats):
    """Counters (the LIVE re-sizes' too)."""

    wallets: int = 0
    corrections: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    untrusted: dict[str, int] = field(default_factory=dict)  # field → answers' fields not trusted


class Reconciler:
    """Runs reconciliation rounds (run :meth:`run` as a task)."""

    def __init__(self, store: ReconcileStore, api: PositionsApi, redis: Any, *, interval_s: float,
                 known: Callable[[list[str]], Awaitable[set[str]]],
                 grace_s: float = SETTLING_GRACE_S, max_calls_per_s: float = MAX_CALLS_PER_S,
                 resubmit: Callable[[epb.Order], Awaitable[Any]] | None = None,
                 refresh_s: float = WALLETS_REFRESH_S, clock: Callable[[], float] = time.monotonic,
                 leftovers: Callable[[str, list[AtVenue]], Awaitable[Any]] | None = None) -> None:
        _FAILURES.add(0)  # exported from the start: an alerting rule and the dashboard read them
        for name in UNTRUSTED_FIELDS:
            _UNTRUSTED.add(0, {"field": name})
        for kind in (CORRECTED, CLOSED_AT_VENUE, EXTERNAL):
            _CORRECTIONS.add(0, {"kind": kind})
        self.store = store
        self.api = api
        self.redis = redis
        self.known = known  # which of these client order ids have an order row (the order store's ``known``)
        self.interval_s = interval_s
        self.refresh_s = min(refresh_s, interval_s)
        self.grace_s = grace_s
        self.max_calls_per_s = max_calls_per_s
        self.min_gap_s = 1.0 / max_calls_per_s  # between any two calls
        self.round_gap_s = self.min_gap_s  # between two calls of the periodic rounds (paced at each refresh)
        self.resubmit = resubmit
        self.leftovers = leftovers  # winning shares left redeemable after a redemption: another round
        self.clock = clock
        self.stats = ReconcileStats()
        self._wallets: dict[str, LiveWallet] = {}
        self._due = DueSet()  # every LIVE wallet: its next round
        self._soon = DueSet()  # wallets asked for
        # wallet → its latest wake when asked for sooner too: the sooner wake's round comes before it
        self._then: dict[str, float] = {}
        self._wake = asyncio.Event()
        # the LIVE refused SELLs, re-sized on their wallet's reconciliation, between this loop's calls
        self.resizer = Resizer(store, INSIDERS, self._venue_count, known=known, resubmit=resubmit, stats=self.stats,
                               wake=self._wake, clock=clock, retry_s=RESIZE_RETRY_S, window_s=RESIZE_WINDOW_S)

    # -- what asks for a reconciliation --------------------------------------------------------------

    def observe(self, changes: list[Change]) -> None:
        """The journal's observer: a LIVE order ended UNKNOWN, LOST or CANCELLED → its wallet soon; a SELL
        refused for lack of shares → its wallet now, and the SELL re-sized once."""
        for c in changes:
            if c.ticket.venue != INSIDERS:
                continue
            if c.life.state in WAKE_STATES:  # past the grace by the venue's asOf, whole seconds
                self.soon(c.ticket.order.follower_wallet_id, self.grace_s + AS_OF_STEP_S)
        self.resizer.observe(changes)

    def soon(self, follower_wallet_id: str, delay_s: float = 0.0) -> None:
        """Reconcile a wallet within ``delay_s`` (ahead of the periodic rounds)."""
        at = self.clock() + delay_s
        current = self._soon.get(follower_wallet_id)
        if current is not None and current != at:
            later = max(current, at)
            self._then[follower_wallet_id] = max(later, self._then.get(follower_wallet_id, later))
        self._soon.set_earlier(follower_wallet_id, at)
        self._wake.set()

    # -- one wallet ---------------------------------------------------------------------------------------

    async def reconcile(self, wallet: LiveWallet) -> dict[str, Decimal] | None:
        """Reconcile one wallet; returns the venue's count per token (None: the venue's answer was unusable,
        nothing changed)."""
        asked_at = time.monotonic()  # the venue's count is no older than this
        asked_wall = time.time()
        answer = await self.api.positions(wallet.follower_wallet_id)
        if answer.status != 200 or answer.body is None:
            self._failed(wallet, f"HTTP {answer.status} {answer.kind} {answer.code} {answer.message}"[:300])
            return None
        try:
            parsed = parse_positions(answer.body)
        except (ValueError, ArithmeticError) as exc:
            self._failed(wallet, f"malformed positions: {exc}"[:300])
            return None
        self._untrusted(wallet, parsed.untrusted)
        venue = [AtVenue(r.token_id, r.condition_id, r.outcome, r.size, r.avg_price, r.redeemable,
                         r.as_of.timestamp() if r.as_of else None) for r in parsed.rows]
        # a count taken before a booking cannot hold it: the grace counts back from the count's asOf too
        counted = CountTime.of(parsed.as_of.timestamp() if parsed.as_of else None, venue)
        view = await self.store.view(wallet.follower_wallet_id, self.grace_s, asked_at, counted)
        corrections = reconcile(view.booked, venue, view.busy, view.resolved, view.lost)
        corrected = {c.asset_id for c in corrections}
        open_assets = {b.asset_id for b in view.booked if b.state == "OPEN"}
        agreeing = [v for v in venue if v.asset_id in open_assets and v.asset_id not in corrected]
        # a busy, resolved or redeemable token's count is shown, not taken as compared (common.lost_sells reads when
        # it was), but for a resolved or redeemable one with a LOST SELL settlement waits for; a count without asOf is
        # as old as the asking
        applied = await self.store.apply(
            wallet, corrections, agreeing, view.subscriptions,
            counted if counted.answer is not None else replace(counted, answer=asked_wall),
            uncompared=view.busy | ({*view.resolved, *(v.asset_id for v in venue if v.redeemable)} - view.lost),
            lost_buys=view.lost_buys)
        self.stats.wallets += 1
        self._record(wallet, applied)
        if await self.store.lost_unseen(wallet.follower_wallet_id):  # its sale not shown yet: a later count
            self.soon(wallet.follower_wallet_id, self.grace_s + AS_OF_STEP_S)
        await self._leftovers(wallet, venue)
        opened = {c.asset_id for c in applied if c.kind == EXTERNAL}
        if opened:  # their books are followed (marks, triggers); the journal's repair also catches it
            try:
                await change_watch_set(self.redis, WATCH_POSITIONS, opened, ())
            except Exception as exc:  # noqa: BLE001 - the watch set's periodic repair adds them
                log.warning("watch set not updated after reconciliation", extra={"error": repr(exc)[:200]})
        return {v.asset_id: v.size for v in venue if not v.redeemable}

    async def _leftovers(self, wallet: LiveWallet, venue: list[AtVenue]) -> None:
        redeemable = [v for v in venue if v.redeemable]
        if not redeemable or self.leftovers is None:
            return
        try:
            await self.leftovers(wallet.follower_wallet_id, redeemable)
        except Exception as exc:  # noqa: BLE001 - the next round looks again
            reraise_if_cancelling(exc)
            log.warning("leftover redemption check failed", extra={"wallet_id": wallet.follower_wallet_id,
                                                                    "error": repr(exc)[:300]})

    def _failed(self, wallet: LiveWallet, detail: str) -> None:
        self.stats.failures += 1
        _FAILURES.add(1)
        raise_alert(AlertKind.RECONCILIATION_FAILED, f"reconcile_failed:{wallet.follower_wallet_id}",
                    f"reconciliation of wallet {wallet.follower_wallet_id} skipped: the venue's positions are "
                    "unusable", wallet_id=wallet.follower_wallet_id, detail=detail[:300])
        log.error("reconciliation skipped: the venue's positions are unusable; nothing changed",
                  extra={"wallet_id": wallet.follower_wallet_id, "detail": detail})

    def _untrusted(self, wallet: LiveWallet, fields: list[tuple[str, str]]) -> None:
        if not fields:
            return
        for name, _why in fields:
            self.stats.untrusted[name] = self.stats.untrusted.get(name, 0) + 1
            _UNTRUSTED.add(1, {"field": name})
        log.warning("venue positions answer used without fields it gave that are not trusted (an asOf: the time the"
                    " engine asked instead; a conditionId: none)", extra={
                        "wallet_id": wallet.follower_wallet_id, "fields": len(fields),
                        "detail": "; ".join(why for _name, why in fields[:5])[:300]})

    def _record(self, wallet: LiveWallet, applied: list[Correction]) -> None:
        for c in applied:
            self.stats.corrections[c.kind] = self.stats.corrections.get(c.kind, 0) + 1
            _CORRECTIONS.add(1, {"kind": c.kind})
            log.warning("position reconciled with the venue", extra={
                "wallet_id": wallet.follower_wallet_id, "asset_id": c.asset_id, "kind": c.kind,
                "shares_before": fmt(c.size_before), "shares_after": fmt(c.size_after)})

    async def _venue_count(self, t: Ticket) -> Decimal | None:
        """The venue's count of the token of a refused SELL, its wallet reconciled first (None: the venue's answer
        was unusable)."""
        o = t.order
        wallet = self._wallets.get(o.follower_wallet_id) or LiveWallet(o.follower_wallet_id, o.follower_proxy.lower())
        counts = await self.reconcile(wallet)
        return None if counts is None else counts.get(o.asset_id, ZERO)

    # -- the rounds -------------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        wallets = await self.store.live_wallets()
        now = self.clock()
        self._wallets = {w.follower_wallet_id: w for w in wallets}
        self.round_gap_s = 1.0 / round_pace(len(wallets), self.interval_s, self.max_calls_per_s)
        for w in wallets:  # a new wallet is reconciled at once; the others keep their place, spread over time
            if w.follower_wallet_id not in self._due:
                self._due.set(w.follower_wallet_id, now)
        for gone in [w for w in self._due if w not in self._wallets]:
            self._due.discard(gone)

    async def run(self) -> None:
        """Reconcile every LIVE wallet at start, then each one an interval after its last round, the rounds' calls
        spread evenly over the interval (``round_pace``); the wallets asked for go first, at up to the cap."""
        refreshed = float("-inf")
        last_call = float("-inf")
        refresh_s = self.refresh_s
        while True:
            try:
                if not self.resizer.loaded:
                    await self.resizer.load()
                await self.resizer.due()
                now = self.clock()
                if now - refreshed >= refresh_s:
                    await self._refresh()
                    refreshed = now
                wallet_id, asked = self._next(now)
                if wallet_id is not None and now - last_call >= (self.min_gap_s if asked else self.round_gap_s):
                    last_call = now
                    # a round ahead of a wake leaves it: it wants a count taken after its grace
                    if (woke := self._soon.get(wallet_id)) is not None and woke <= now:
                        self._soon.discard(wallet_id)
                        if (then := self._then.pop(wallet_id, None)) is not None and then > now:
                            self._soon.set(wallet_id, then)
                    wallet = self._wallets.get(wallet_id)
                    if wallet is not None:
                        await self.reconcile(wallet)
                    if wallet_id in self._due:
                        self._due.set(wallet_id, self.clock() + self.interval_s)
                    continue
                wait = min(self._wait_s(now, last_call), refreshed + refresh_s - now)
            except asyncio.CancelledError:
                raise
            except Exception:  # a storage outage: the next round retries
                reraise_if_cancelling()
                log.exception("reconciliation round failed")
                wait = 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, wait))

    def _next(self, now: float) -> tuple[str | None, bool]:
        """The wallet to reconcile now, and whether it was asked for: one asked for first, then the most
        overdue of the rounds."""
        soon = self._soon.first()
        if soon is not None and soon[0] <= now:
            return soon[1], True
        due = self._due.first()
        return (due[1] if due is not None and due[0] <= now else None), False

    def _wait_s(self, now: float, last_call: float) -> float:
        upcoming = []
        if (soon := self._soon.first()) is not None:
            upcoming.append(max(soon[0], last_call + self.min_gap_s))
        if (due := self._due.first()) is not None:
            upcoming.append(max(due[0], last_call + self.round_gap_s))
        if (refused := self.resizer.next_at()) is not None:
            upcoming.append(refused)
        nxt = min(upcoming) if upcoming else now + self.refresh_s
        return max(nxt - now, 0.01)

