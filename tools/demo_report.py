"""What the copy flow of ``make demo`` prints: one line per copy, the summary table, latency percentiles."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

import psycopg

from common.config import StorageSettings
from services.executor.domain.copy_skips import declined_copy
from tradingtools.execution.v1 import execution_pb2 as epb

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sim.scenarios import Phase
    from tools.demo_copy import World

CENT = Decimal("0.01")


@dataclass
class SessionResult:
    """Decisions and outcomes of the whole session."""

    routed: list[epb.RoutedTrade] = field(default_factory=list)
    terminal: dict[str, epb.OrderEvent] = field(default_factory=dict)
    by_phase: dict[str, list[epb.RoutedTrade]] = field(default_factory=dict)

    def add(self, phase: Phase, routed: list[epb.RoutedTrade], terminal: dict[str, epb.OrderEvent]) -> None:
        self.routed += routed
        self.terminal.update(terminal)
        self.by_phase[phase.name] = routed

    def orders(self) -> list[tuple[epb.RoutedTrade, epb.Order]]:
        return [(r, o) for r in self.routed for o in r.orders]


def _d(text: str) -> str:
    return format(Decimal(text or "0").normalize(), "f")


def _money(text: str) -> str:
    return f"${Decimal(text or '0').quantize(CENT)}"


def copy_lines(world: World, routed: list[epb.RoutedTrade], terminal: dict[str, epb.OrderEvent],
               notes: Sequence[str] = ()) -> list[str]:
    """One line per copy (or skip) of each routed leader trade (``notes[i]``: a remark on the i-th trade)."""
    lines: list[str] = []
    slugs, names = world.slug_by_asset, world.sub_key
    posts = post_outcomes(world)
    for i, r in enumerate(routed):
        t = r.trade
        note = notes[i] if i < len(notes) else ""
        if note:
            multi = f" (tx {t.tx_hash[:10]}…, occurrence {t.occurrence})" if note.startswith("multi-fill") else ""
            lines.append(f"    {'':7} # {note}{multi}")
        side = "BUY " if t.side == 1 else "SELL"
        at = (t.received_time_ns - world.t0_ns) / 1e9
        head = (f"    {at:6.2f}s {world.leader_key(t.wallet):<8} {side} {_d(t.size):>5}@{_d(t.price):<4} "
                f"{slugs.get(t.asset_id, t.asset_id[:10])[:22]:<22}")
        for o in r.orders:
            who = names.get(o.subscription_id, "?").capitalize()
            what = f"BUY {_money(o.amount_usd)}" if o.side == 1 else f"SELL {_d(o.size)} sh"
            e = terminal.get(o.client_order_id)
            lines.append(f"{head} → {who:<4} {what:<13} → {_outcome(e, posts, o)}")
        for s in r.skips:
            who = names.get(s.subscription_id, "?").capitalize()
            lines.append(f"{head} → {who:<4} skipped {s.reason}: {s.detail[:70]}")
    return lines


def post_outcomes(world: World) -> Counter[tuple[str, str]]:
    """POSTs at the Insiders fake per (client order id, outcome)."""
    return world.pipeline.sim.call(lambda: Counter(
        (r.client_order_id or r.idempotency_key, r.outcome) for r in world.pipeline.sim.insiders.posts))


def _outcome(e: epb.OrderEvent | None, posts: Counter[tuple[str, str]], o: epb.Order) -> str:
    if e is None:
        return "NO TERMINAL EVENT"
    kind = epb.OrderEventType.Name(e.type).removeprefix("ORDER_EVENT_TYPE_")
    venue = "paper" if o.mode == 2 else "insiders"
    faults = posts[(o.client_order_id, "fault")]
    retry = f", after {faults} × 503" if faults else ""
    latency = f"  {Decimal(e.copy_latency_ms).quantize(Decimal('0.1'))} ms" if e.copy_latency_ms else ""
    if e.type == epb.ORDER_EVENT_TYPE_FILLED:
        return f"{kind} {_d(e.filled_size)}@{_d(e.avg_price)} {venue}{retry}{latency}"
    return f"{kind} {e.reason}{retry}: {e.detail[:60]}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary(world: World, result: SessionResult, out: Callable[[str], None]) -> dict[str, Any]:
    """The summary table, skips by reason (PostgreSQL ``copy_skips``) and latency percentiles."""
    names = world.sub_key
    rows: dict[str, Counter[str]] = {k: Counter() for k in world.subs}
    spent: dict[str, Decimal] = defaultdict(Decimal)
    for _r, o in result.orders():
        key = names[o.subscription_id]
        e = result.terminal[o.client_order_id]
        if is_executor_skip(e):  # declined by the executor (thin book, nothing held): a skip, not a copy
            rows[key]["skipped"] += 1
            continue
        rows[key]["copies"] += 1
        rows[key]["filled" if e.type == epb.ORDER_EVENT_TYPE_FILLED else "not filled"] += 1
        if e.type == epb.ORDER_EVENT_TYPE_FILLED:
            notional = Decimal(e.filled_size or "0") * Decimal(e.avg_price or "0")
            spent[key] += notional if o.side == 1 else -notional
    for r in result.routed:
        for s in r.skips:
            rows[names[s.subscription_id]]["skipped"] += 1
    out("\n  follower  leader    mode   sizing                          copies  filled  not filled  skipped  net USD")
    for key, c in rows.items():
        f = world.followers[key]
        out(f"  {f.name:<9} {f.leader:<9} {f.mode.removeprefix('EXECUTION_MODE_'):<6} {f.describe()[5:]:<31} "
            f"{c['copies']:>6}  {c['filled']:>6}  {c['not filled']:>10}  {c['skipped']:>7}  "
            f"{spent[key].quantize(CENT):>7}")
    stored = skips_in_postgres(world)
    streamed = Counter(s.reason for r in result.routed for s in r.skips)
    executor_skips = Counter(e.reason for e in result.terminal.values() if is_executor_skip(e))
    rejected = Counter(e.reason for e in result.terminal.values() if e.type != epb.ORDER_EVENT_TYPE_FILLED)
    out("  skips by reason (PostgreSQL copy_skips): "
        + ", ".join(f"{k} {v}" for k, v in sorted(stored.items(), key=lambda kv: -kv[1])))
    out("  not filled by the executor: " + (", ".join(f"{k} {v}" for k, v in rejected.items()) or "none"))
    latencies = [float(e.copy_latency_ms) for e in result.terminal.values()
                 if e.type == epb.ORDER_EVENT_TYPE_FILLED and e.copy_latency_ms]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    routed_ms = [(o.routed_time_ns - r.trade.received_time_ns) / 1e6 for r, o in result.orders()
                 if result.terminal[o.client_order_id].copy_latency_ms and r.trade.received_time_ns]
    out(f"  copy latency, leader frame received by ingest → order POST sent: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies, default=0):.1f} ms (n={len(latencies)}); of which frame → "
        f"routed: p50 {percentile(routed_ms, 50):.1f} ms, p99 {percentile(routed_ms, 99):.1f} ms")
    return {"stored_skips": stored, "streamed_skips": streamed, "executor_skips": executor_skips,
            "rejected": rejected, "latencies": latencies}


def is_executor_skip(e: epb.OrderEvent) -> bool:
    """A copy's final event that records it as declined by the executor (counted with the router's skips)."""
    return e.type == epb.ORDER_EVENT_TYPE_REJECTED and declined_copy(e.reason, e.origin, e.subscription_id)


def skips_in_postgres(world: World) -> Counter[str]:
    """Skip reasons recorded in ``copy_skips`` for this run's subscriptions."""
    url = StorageSettings.from_env(world.pipeline.env).database_url.value
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT reason, count(*) FROM copy_skips WHERE subscription_id = ANY(%s) GROUP BY reason",
                            (list(world.subs.values()),)).fetchall()
    return Counter({reason: int(n) for reason, n in rows})


def floor_cents(value: Decimal) -> Decimal:
    """Round down to the cent."""
    return value.quantize(CENT, rounding=ROUND_DOWN)
