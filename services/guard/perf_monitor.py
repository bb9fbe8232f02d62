"""The performance-rule loop: evaluate every ACTIVE subscription's PnL, record decisions, apply them via control;
and write every subscription's unrealized PnL at the current marks into its stats (``stats.unrealizedPnlUsd``).

A decision is recorded in PostgreSQL before control is called, with a deterministic id that control
treats as an idempotency key: a crash in between re-sends the same decision at the next start-up
and changes nothing twice.

A subscription its loss-stop paused and that is ACTIVE again was resumed by its user, who accepts the loss
so far (a loss-stop that lands on a subscription its user paused meanwhile becomes its ``pausedReason`` and raises
its alert in control, so that resume too is made knowing the loss-stop): the first evaluation that finds it so with
complete marks records RESUMED with the PnL then, and the next loss-stop fires ``lossStopUsd`` below that PnL, not
at once on the loss the resume was made with. Until the marks are complete (no held asset unmarked or on a book
that is not fresh) the baseline is not recorded and the loss-stop counts from the PnL the pause was decided at; a
profit-scale waits for complete marks too.

The rules count the fills of the subscription's mode's venue only, and a resume baseline only in the mode it was
recorded in: a change of mode starts the rules afresh (control also puts appliedMultiplier back to 1 then).
Each decision carries the rules it was made under (mode and perf); control refuses one whose rules changed
since, and the refusal is recorded: the next pass decides again under the current rules.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from common.decimals import fmt
from services.guard.domain import perf_rules
from services.guard.domain.perf_rules import DecisionRow
from services.guard.loops import reraise_if_cancelled
from services.guard.ports import Control, Markets, PerfActionRefused, PerfRecords

log = logging.getLogger(__name__)


@dataclass
class PerfStats:
    """Counters of the loop."""

    evaluations: int = 0
    fill_reads: int = 0  # evaluations that read the subscription's fills (the others reused them)
    fills_read: int = 0  # fills those reads returned (only the ones not seen before)
    decisions: int = 0
    applied: int = 0
    refused: int = 0
    stale: int = 0  # refused because the rules changed since the decision (decided again under the new ones)
    mark_waits: int = 0  # evaluations whose profit-scale or resume baseline waited for complete marks
    resumes: int = 0  # loss-stopped subscriptions found ACTIVE again (their loss-stop rebased)
    unrealized_written: int = 0  # stats rows whose unrealized PnL changed
    errors: int = 0


@dataclass(frozen=True, slots=True)
class _Book:
    """What guard knows of a subscription's fills: their sums per venue (``ledgers``) as of ``snapshot`` (the
    PostgreSQL snapshot of the read), and the subscription's fills version then (None: no stats row)."""

    version: int | None
    snapshot: str
    ledgers: dict[str, perf_rules.Ledger]
    any_fills: bool  # False: no fill yet (nothing to evaluate)


class PerfMonitor:
    """Loss-stop and profit-scale for every ACTIVE subscription with perf rules; unrealized PnL for every one."""

    def __init__(self, store: PerfRecords, control: Control, markets: Markets, *, interval_s: float,
                 unrealized_reads_per_pass: int = 500, reads_per_statement: int = 25,
                 book_max_age_s: float = 30.0) -> None:
        self.store = store
        self.control = control
        self.markets = markets
        self.interval_s = interval_s
        self.book_max_age_ms = int(book_max_age_s * 1000)  # a held asset's book older than this is not trusted
        self.unrealized_reads_per_pass = unrealized_reads_per_pass
        # the fills of this many subscriptions per statement: a pass read up to 500 subscriptions' fills at once
        # (their whole histories after a restart), and parsing and folding them held the tick loop 56-112 ms
        self.reads_per_statement = reads_per_statement
        self.stats = PerfStats()
        self._books: dict[str, _Book] = {}
        self._rule_ids: set[str] = set()
        self._rules: dict[str, tuple[dict[str, Any], perf_rules.PerfRules | None]] = {}  # id → (perf, its rules)
        self._stats_ids: set[str] = set()
        self._waiting: set[str] = set()  # subscriptions waiting for complete marks (logged when the wait starts)
        self._baseline_waited: set[str] = set()  # resumed ones whose baseline waited for complete marks

    async def run(self) -> None:
        """Re-send unapplied decisions, then evaluate every ``interval_s`` until cancelled."""
        while True:
            reraise_if_cancelled()  # redis-py can turn a cancel into a timeout it retries (the marks read)
            try:
                await self.resend_unapplied()
                await self.evaluate_all()
                await self.publish_unrealized()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must survive outages
                reraise_if_cancelled()
                self.stats.errors += 1
                log.warning("perf evaluation failed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(self.interval_s)

    async def resend_unapplied(self) -> int:
        """Apply decisions recorded but never acknowledged."""
        pending = await self.store.unapplied()
        for row in pending:
            await self._apply(row)
        return len(pending)

    async def evaluate_all(self) -> list[perf_rules.Decision]:
        """One pass over every ACTIVE subscription with rules; returns the decisions applied."""
        out = []
        subs = await self.store.active_subscriptions()
        self._rule_ids = {s.id for s in subs}
        self._prune()
        for sub in subs:
            rules = self._rules_of(sub)
            if rules is None or not rules.active:
                continue
            decision = await self.evaluate(sub, rules)
            if decision is not None:
                out.append(decision)
        return out

    async def publish_unrealized(self) -> int:
        """Write every subscription's unrealized PnL at the current marks where it changed (the ``stats``
        control shows); returns the rows written. At most ``unrealized_reads_per_pass`` subscriptions have
        their fills read in one pass (the first pass after a start would read them all): the others wait
        for the next passes, so the loss-stops behind it are not held up."""
        rows = await self.store.stats_rows()
        self._stats_ids = {r.id for r in rows}
        self._prune()
        books: dict[str, perf_rules.Holdings] = {}
        current = []
        due: dict[str, str | None] = {}
        for row in rows:
            kept = self._books.get(row.id)
            if kept is None or kept.version != row.fills_version:
                if len(due) >= self.unrealized_reads_per_pass:
                    continue
                due[row.id] = kept.snapshot if kept else None
            current.append(row)
        await self._read_many(due, {row.id: row.fills_version for row in current})
        for row in current:
            kept = self._books[row.id]
            if kept.any_fills and (book := perf_rules.all_venues(kept.ledgers)).held:
                books[row.id] = book
        held = {asset for book in books.values() for asset in book.held}
        marks = await self.markets.marks(held) if held else {}
        changed = [(row.id, value) for row in current
                   if (value := perf_rules.unrealized_usd(books.get(row.id), marks)) != row.unrealized_pnl_usd]
        written = await self.store.save_unrealized(changed)
        self.stats.unrealized_written += written
        return written

    def _rules_of(self, sub: perf_rules.SubscriptionRules) -> perf_rules.PerfRules | None:
        """The subscription's rules, parsed again only when its perf changed (None: unreadable, logged once)."""
        kept = self._rules.get(sub.id)
        if kept is not None and (kept[0] is sub.perf or kept[0] == sub.perf):
            return kept[1]
        try:
            rules: perf_rules.PerfRules | None = perf_rules.PerfRules.from_json(sub.perf)
        except ValueError:
            log.warning("subscription perf rules unreadable", extra={"subscription_id": sub.id})
            rules = None
        self._rules[sub.id] = (sub.perf, rules)
        return rules

    def _prune(self) -> None:
        """Forget the fills of subscriptions neither rules nor stats need any more, and the rules of those no
        longer ACTIVE with rules."""
        for gone in self._books.keys() - self._rule_ids - self._stats_ids:
            del self._books[gone]
        for gone in self._rules.keys() - self._rule_ids:
            del self._rules[gone]
        self._waiting &= self._rule_ids
        self._baseline_waited &= self._rule_ids

    async def evaluate(self, sub: perf_rules.SubscriptionRules,
                       rules: perf_rules.PerfRules) -> perf_rules.Decision | None:
        """Evaluate one subscription on its mode's fills; record and apply a decision when its PnL crossed a rule.

        ``sub.fills_version`` (read before this call) lets the fills' sums be reused while it is unchanged;
        None (no stats row) looks for new fills every time."""
        self.stats.evaluations += 1
        sid = sub.id
        book = await self._holdings(sid, sub.fills_version, perf_rules.venue_of(sub.mode))
        if book is None:
            return None
        marks, fresh = (await self.markets.fresh_marks(set(book.held), self.book_max_age_ms) if book.held
                        else ({}, set()))
        result = perf_rules.valued(book, marks, fresh)
        prior = await self.store.decisions(sid)
        if any(p.applied_at is None for p in prior):
            return None  # an earlier decision is still being applied
        basis = perf_rules.Basis(sub.mode, rules)
        scales = [p for p in prior if p.action == "SCALE"]
        pauses = [p.decision_id for p in prior if p.action == "PAUSE"]
        resumed_at, baseline_waits = await self._resumed_at(sid, prior, pauses, result, basis)
        waits = (["resume baseline"] if baseline_waits else []) + (
            ["profit-scale"] if not result.complete and perf_rules.scale_due(rules, result, sub.applied_multiplier)
            else [])
        self._wait(sid, result, waits)
        decision = perf_rules.decide(
            sid, rules, result, pauses_before=len(pauses), scaled_ids=frozenset(p.decision_id for p in scales),
            scaled_to=sub.applied_multiplier, resumed_at_pnl=resumed_at, basis=basis)
        if decision is None:
            return None
        self.stats.decisions += 1
        log.info("perf decision", extra={"subscription_id": sid, "action": decision.action.value,
                                         "reason": decision.reason, "decision_id": decision.decision_id})
        if await self.store.record(decision):
            await self._apply(DecisionRow(decision.decision_id, sid, decision.action.value, decision.multiplier,
                                          decision.reason, None, decided_under=basis.to_json()))
        return decision

    async def _resumed_at(self, sid: str, prior: list[DecisionRow], pauses: list[str], result: perf_rules.Pnl,
                          basis: perf_rules.Basis) -> tuple[Decimal | None, bool]:
        """The PnL the next loss-stop of this ACTIVE subscription counts from (``prior``: its decisions in the order
        recorded): the one at which it was found resumed after its last loss-stop in this mode (recorded the first
        time it is seen with complete marks; until then the PnL that pause was decided at), or None when no
        loss-stop paused it in this mode (rows from before modes were recorded count in any); and whether the
        baseline waits for complete marks."""
        last = next((p for p in reversed(prior) if (p.basis is None or p.basis.mode == basis.mode)
                     and (p.action == "RESUMED" or (p.action == "PAUSE" and not p.error))), None)
        if last is None:
            return None, False
        if last.action == "RESUMED":
            return Decimal(last.pnl_usd), False
        paused_at = Decimal(last.pnl_usd)
        if not result.complete:  # a baseline at an untrusted PnL would be kept for good
            self._baseline_waited.add(sid)
            return paused_at, True
        # the loss-stop paused it and it is ACTIVE: the user resumed it, accepting the loss so far. After a wait
        # for trusted marks the PnL now also holds what was lost since the resume, which nobody accepted: the
        # baseline is then no lower than the PnL the pause was decided at (the one the wait counted from)
        if sid in self._baseline_waited and result.total < paused_at:
            result = replace(result, unrealized=paused_at - result.realized)
        self._baseline_waited.discard(sid)
        await self.store.record_resumed(perf_rules.resumed_id(sid, pauses.index(last.decision_id) + 1), sid,
                                        result, basis.rules.loss_stop_usd, basis)
        self.stats.resumes += 1
        log.info("loss-stopped subscription resumed: the next loss-stop counts from here",
                 extra={"subscription_id": sid, "pnl_usd": fmt(result.total)})
        return result.total, False

    def _wait(self, sid: str, result: perf_rules.Pnl, waits: list[str]) -> None:
        """Count an evaluation in which ``waits`` wait for complete marks; log when a subscription starts to."""
        if not waits:
            self._waiting.discard(sid)
            return
        self.stats.mark_waits += 1
        if sid not in self._waiting:
            self._waiting.add(sid)
            log.warning("perf rule waits for trusted marks", extra={
                "subscription_id": sid, "waiting": waits, "unmarked": list(result.unmarked[:10]),
                "stale": list(result.stale[:10])})

    async def _holdings(self, subscription_id: str, fills_version: int | None,
                        venue: str | None = None) -> perf_rules.Holdings | None:
        """The subscription's holdings in ``venue`` (None: every venue's together), or None without fills there.
        Fills are read only when its fills version moved (every pass without a version), and then only the ones
        the previous read could not see; they are folded in the order the reads find them (time order within
        one read), as the executor books them."""
        kept = self._books.get(subscription_id)
        if kept is None or fills_version is None or kept.version != fills_version:
            await self._read_many({subscription_id: kept.snapshot if kept else None}, {subscription_id: fills_version})
            kept = self._books[subscription_id]
        if not kept.any_fills:
            return None
        if venue is None:
            return perf_rules.all_venues(kept.ledgers)
        ledger = kept.ledgers.get(venue)
        return perf_rules.open_holdings(ledger) if ledger is not None else None

    async def _read_many(self, due: dict[str, str | None], versions: dict[str, int | None]) -> None:
        """Read the fills of every subscription of ``due`` (id → its last snapshot) that its last snapshot could not
        see, ``reads_per_statement`` subscriptions a statement, and fold them into what is kept (with ``versions``:
        each one's fills version, read before these fills, so they hold at least what it counted)."""
        ids = list(due)
        for at in range(0, len(ids), self.reads_per_statement):  # the tick loop runs while each part is read
            part = {sid: due[sid] for sid in ids[at:at + self.reads_per_statement]}
            self.stats.fill_reads += len(part)
            read, snapshot = await self.store.fills_since_many(part)
            for subscription_id, fills in read.items():
                kept = self._books.get(subscription_id)
                self.stats.fills_read += len(fills)
                ledgers = perf_rules.fold_by_venue(fills, kept.ledgers if kept else None)
                self._books[subscription_id] = _Book(versions[subscription_id], snapshot, ledgers,
                                                     bool(fills) or (kept is not None and kept.any_fills))

    async def _apply(self, row: DecisionRow) -> None:
        multiplier = Decimal(row.multiplier) if row.multiplier is not None else None
        try:
            applied = await self.control.apply_perf_action(
                subscription_id=row.subscription_id, action=row.action, multiplier=multiplier, reason=row.reason,
                decision_id=row.decision_id, decided_under=row.basis)
        except PerfActionRefused as exc:
            # recorded refused for good: never re-sent; a stale one is decided again under the current rules
            if exc.stale:
                self.stats.stale += 1
                log.info("perf decision made under rules changed since: evaluated again",
                         extra={"decision_id": row.decision_id, "subscription_id": row.subscription_id})
            else:
                self.stats.refused += 1
                log.warning("perf action refused", extra={"decision_id": row.decision_id, "error": str(exc)[:300]})
            await self.store.settle(row.decision_id, False, str(exc)[:500])
            return
        self.stats.applied += 1
        await self.store.settle(row.decision_id, applied)
