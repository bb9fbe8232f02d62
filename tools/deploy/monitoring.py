"""The Grafana dashboard (``deploy/grafana/tradingtools.json``) and the Prometheus alerting rules
(``deploy/prometheus/alerts.yaml``) over the services' ``/metrics`` (:mod:`common.metrics`).

Every PromQL expression of both is written here once; ``tests/e2e/test_observability.py`` scrapes the running
stack and checks that every metric they name exists. Series are grouped by the ``component`` label each service
puts on its own metrics, so neither depends on how Prometheus discovers the pods.
"""

from __future__ import annotations

import json
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _q(quantile: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({metric}_bucket[5m])))"


STAGES = (  # the copy path's stages: (label, histogram)
    ("leader frame → routed", "router_received_to_routed_milliseconds"),
    ("routed → POST", "executor_routed_to_post_milliseconds"),
    ("leader frame → POST", "executor_copy_latency_milliseconds"),
    ("POST → fill", "executor_post_to_fill_milliseconds"),
    ("leader frame → fill", "executor_frame_to_fill_milliseconds"),
)
CONSUMER_LAG = ("max by (stream) (stream_last_entry_time_seconds) - on (stream) group_right "
                "max by (stream, consumer) (consumer_position_time_seconds)")

# (title, unit, [(legend, expr)], kind) in rows of (row title, panels)
PANELS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]], str]]]] = [
    ("Copies", [
        ("Copies per second", "ops", [
            ("leader trades kept", "sum(rate(ingest_trades_kept_total[1m]))"),
            ("orders routed", "sum(rate(router_orders_total[1m]))"),
            ("copies filled", 'sum(rate(executor_first_fills_total{origin="COPY"}[1m]))')], "timeseries"),
        ("Orders by final state", "ops", [
            ("{{state}} {{venue}}", "sum by (state, venue) (rate(executor_orders_total[5m]))")], "timeseries"),
        ("Skips by reason", "ops", [
            ("{{reason}}", "sum by (reason) (rate(router_skips_total[5m]))")], "timeseries"),
    ]),
    ("Latency", [
        ("Copy latency p50 per stage", "ms", [(label, _q(0.5, metric)) for label, metric in STAGES], "timeseries"),
        ("Copy latency p99 per stage", "ms", [(label, _q(0.99, metric)) for label, metric in STAGES], "timeseries"),
        ("Venue time → ingest (feed lag) p50 / p99", "ms", [
            ("p50 {{source}}", _q(0.5, "ingest_feed_lag_milliseconds", "source")),
            ("p99 {{source}}", _q(0.99, "ingest_feed_lag_milliseconds", "source"))], "timeseries"),
    ]),
    ("Venue", [
        ("Circuit breaker (0 closed, 1 half-open, 2 open)", "none", [
            ("{{venue}}", 'max by (venue) (executor_breaker_state{state="OPEN"}) * 2 '
                          '+ max by (venue) (executor_breaker_state{state="HALF_OPEN"})')], "state"),
        ("Breaker transitions", "short", [
            ("{{venue}} → {{to}}", "sum by (venue, to) (increase(executor_breaker_transitions_total[5m]))")],
         "timeseries"),
        ("Redemptions and reconciliation (1 h)", "short", [
            ("redemptions {{state}}", "sum by (state) (increase(executor_redemptions_total[1h]))"),
            ("corrections {{kind}}", "sum by (kind) (increase(executor_reconcile_corrections_total[1h]))"),
            ("reconciliations failed", "sum(increase(executor_reconcile_failures_total[1h]))")], "timeseries"),
        ("Triggers", "short", [
            ("armed", "sum(guard_armed_triggers)"),
            ("assets watched", "sum(guard_watched_assets)")], "timeseries"),
    ]),
    ("Feeds", [
        ("Feed silence (time since the last data message)", "s", [
            ("{{feed}}", "max by (feed) (ingest_feed_silence_seconds)")], "timeseries"),
        ("Reconnects and stalls (5 min)", "short", [
            ("reconnects {{feed}}", "sum by (feed) (increase(ingest_reconnects_total[5m]))"),
            ("stalls {{feed}}", "sum by (feed) (increase(ingest_stalls_total[5m]))")], "timeseries"),
        ("Followed books", "short", [
            ("{{state}}", "sum by (state) (ingest_books)"),
            ("oldest book's age (s)", "max(ingest_book_age_max_seconds)")], "timeseries"),
    ]),
    ("Streams", [
        ("Consumer lag (log end − consumer position)", "s", [("{{consumer}} ← {{stream}}", CONSUMER_LAG)],
         "timeseries"),
        ("Consumer reconnects and dead letters (5 min)", "short", [
            ("reconnects {{consumer}}", "sum by (consumer) (increase(consumer_reconnects_total[5m]))"),
            ("dead letters {{consumer}}", "sum by (consumer) (increase(consumer_dead_letters_total[5m]))")],
         "timeseries"),
        ("Alerts (1 h)", "short", [
            ("raised {{kind}}", "sum by (kind) (increase(alerts_raised_total[1h]))"),
            ("{{outcome}}", "sum by (outcome) (increase(alerts_delivery_total[1h]))"),
            ("loss-stop pauses", 'sum(increase(control_perf_actions_total{action="PAUSE"}[1h]))')], "timeseries"),
    ]),
    ("Processes", [
        ("CPU (cores)", "short", [("{{component}}", "sum by (component) (rate(process_cpu_seconds_total[1m]))")],
         "timeseries"),
        ("Resident memory", "bytes", [("{{component}}", "sum by (component) (process_resident_memory_bytes)")],
         "timeseries"),
        ("Restarts (15 min)", "short", [
            ("{{component}}", "sum by (component) (changes(process_start_time_seconds[15m]))")], "timeseries"),
    ]),
]

# (alert, expr, for, severity, summary): the conditions the engine also alerts on itself (common.alerts), for a
# Prometheus that watches it from outside (e.g. when the webhook or control is what failed).
RULES: list[tuple[str, str, str, str, str]] = [
    ("TradingToolsOrderLost", 'sum by (venue) (increase(executor_orders_total{state="LOST"}[10m])) > 0', "0m",
     "critical", "An order went LOST at {{ $labels.venue }}: the venue never confirmed it; check it by hand."),
    ("TradingToolsBreakerOpen", 'max by (venue) (executor_breaker_state{state="OPEN"}) == 1', "0m", "critical",
     "The {{ $labels.venue }} circuit breaker is open: copies wait, then are rejected."),
    ("TradingToolsBreakerFlapping", "sum by (venue) (increase(executor_breaker_transitions_total"
     '{to="OPEN"}[30m])) >= 3', "0m", "warning", "The {{ $labels.venue }} breaker opened 3 times in 30 min."),
    ("TradingToolsLossStopPaused", 'sum(increase(control_perf_actions_total{action="PAUSE"}[10m])) > 0', "0m",
     "warning", "A subscription was paused by its performance rules (a loss-stop)."),
    ("TradingToolsFeedStalled", "sum by (feed) (increase(ingest_stalls_total[10m])) > 0", "0m", "warning",
     "The {{ $labels.feed }} feed went silent with its socket open (the watchdog reconnected it)."),
    ("TradingToolsFeedSilent", 'max by (feed) (ingest_feed_silence_seconds{feed="rtds"}) > 120', "2m", "critical",
     "No leader trade frame on {{ $labels.feed }} for over 2 minutes."),
    ("TradingToolsRedemptionFailed", 'sum(increase(executor_redemptions_total{state="FAILED"}[30m])) > 0', "0m",
     "critical", "A redemption failed for good: a winning position's payout is not in its wallet."),
    ("TradingToolsRedemptionOverdue", "sum by (call) (increase(executor_redemptions_overdue_total[30m])) > 0", "0m",
     "critical", "A redemption's {{ $labels.call }} calls kept failing past their bound (TT_TUNE_EXECUTOR_REDEEM_"
     "OVERDUE_FAILURES in a row or TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S since the first), or (status) the venue took it "
     "and still answers it is not final TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S later: it is overdue "
     "(REDEMPTION_OVERDUE) and still retried every 5 min under its Idempotency-Key; check the venue's health and the "
     "executor's log (the alert names the redemption: redeem, its payout is not in the wallet; status, the venue "
     "took it and its end is not known, or, failures 0, it may never pay out)."),
    ("TradingToolsReconciliationFailing", "sum(increase(executor_reconcile_failures_total[30m])) > 0", "0m",
     "warning", "Reconciliation with the venue was skipped: its positions were unusable."),
    ("TradingToolsDeadLetters", "sum by (consumer) (increase(consumer_dead_letters_total[10m])) > 0", "0m",
     "critical", "{{ $labels.consumer }} set items aside as dead letters (tt:dlq:{{ $labels.consumer }}), not for an "
     "outage: python -m tools.deadletters shows them; docs/operations.md (Dead letters) says what each means. "
     "There is no replay."),
    ("TradingToolsResolutionUnclear", "sum(increase(ingest_resolutions_unclear_total[1h])) > 0", "0m", "warning",
     "A held market has been closed for hours without a clear winner (a 50/50 or voided result, a dispute): its "
     "positions are not settled until a person acts (RESOLUTION_UNCLEAR)."),
    ("TradingToolsResolutionContradicted",
     'sum(increase(ingest_resolutions_total{outcome="CONTRADICTED"}[1h])) > 0', "0m", "critical",
     "A source named another winner for a market already settled on the first one recorded: check the market at "
     "the venue; if the first was wrong, its positions were settled on the wrong side (RESOLUTION_CONTRADICTED)."),
    ("TradingToolsOrderCancelRefused",
     'sum(increase(executor_resolved_order_cancels_total{outcome="REFUSED"}[1h])) > 0', "0m", "warning",
     "The venue refused to cancel an order resting on a resolved market: while it rests, its position is not "
     "settled (a winner not redeemed) until someone cancels it by hand (ORDER_CANCEL_REFUSED)."),
    ("TradingToolsSettledWithoutCount",
     "sum(increase(executor_positions_settled_without_count_total[1h])) > 0", "0m", "critical",
     "A position was settled on its booked shares while a SELL of it that ended LOST may have sold (the venue's "
     "positions were not read after it): its payout, PnL and redemption may count shares sold; check it at the "
     "venue (SETTLED_WITHOUT_COUNT)."),
    ("TradingToolsConsumerLagging", f"({CONSUMER_LAG}) > 30", "5m", "warning",
     "{{ $labels.consumer }} is {{ $value | humanizeDuration }} behind {{ $labels.stream }}."),
    ("TradingToolsCopyLatencyHigh", f"{_q(0.99, 'executor_copy_latency_milliseconds')} > 50", "10m", "warning",
     "p99 leader frame → POST above 50 ms for 10 minutes."),
    ("TradingToolsCrashLooping", "changes(process_start_time_seconds[15m]) >= 3", "0m", "critical",
     "{{ $labels.component }} restarted {{ $value }} times in 15 minutes."),
    ("TradingToolsAlertsUndelivered", 'sum(increase(alerts_delivery_total{outcome=~"EXPIRED|REFUSED"}[1h])) > 0',
     "0m", "critical", "The engine's own alerts could not be delivered to the webhook; see control's log."),
    ("TradingToolsAlertWebhookFailing", 'sum(increase(alerts_webhook_posts_total{result!="2xx"}[10m])) > 0 unless '
     'sum(increase(alerts_webhook_posts_total{result="2xx"}[10m])) > 0', "10m", "critical",
     "The alert webhook has refused or not answered every POST of control for 10 minutes and more (5xx, 4xx, no "
     "answer): the engine's alerts wait in tt:stream:alerts, for a day at most; see control's log."),
    ("TradingToolsAlertsDropped", "sum by (stage) (increase(alerts_dropped_total[1h])) > 0", "0m", "critical",
     "Alerts were lost before delivery ({{ $labels.stage }}: outbox = Redis away long, stream = its length cap); "
     "the log of the service that raised them still has each one."),
    ("TradingToolsLogEntrySetAside", "sum by (log) (increase(stream_dead_letters_total[1h])) > 0", "0m", "critical",
     "An entry of {{ $labels.log }} too large for any gRPC message, or unreadable, was set aside "
     "(tt:dlq:{{ $labels.log }}): no "
     "reader got it (a routed trade's copies were never made); docs/operations.md (Dead letters)."),
    ("TradingToolsFillNotBooked", "sum by (venue) (increase(executor_fills_of_other_venue_total[1h])) > 0", "0m",
     "critical", "A fill at {{ $labels.venue }} was not booked: its wallet holds the token in the other venue "
     "(FILL_NOT_BOOKED): shares no position shows; book them by hand (the executor's log names the order)."),
    ("TradingToolsVenueAnswerImplausible",
     "sum by (venue) (increase(executor_implausible_answers_total[10m])) > 0", "0m", "critical",
     "{{ $labels.venue }} reports fills orders cannot have made: not booked, the orders wait UNKNOWN holding their "
     "reservations until it answers plausibly (VENUE_ANSWER_IMPLAUSIBLE; their ids are in the executor's log)."),
]


# A component whose metrics are gone (down, or no longer scraped): one rule per component, since absent() only
# sees the series it is asked about.
RULES += [("TradingToolsComponentDown", f'absent_over_time(process_start_time_seconds{{component="{name}"}}[5m])',
           "0m", "critical", f"No metrics from {name} for 5 minutes: it is down or no longer scraped.")
          for name in ("ingest", "router", "executor", "guard", "control")]


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard and the rules."""
    return [expr for _row, panels in PANELS for _t, _u, targets, _k in panels for _l, expr in targets] + [
        r[1] for r in RULES]


def _panel(pid: int, title: str, unit: str, targets: list[tuple[str, str]], kind: str, x: int, y: int
           ) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": pid, "title": title, "type": "state-timeline" if kind == "state" else "timeseries",
        "datasource": DATASOURCE, "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                    for i, (legend, expr) in enumerate(targets)],
    }
    if kind == "state":
        panel["fieldConfig"]["defaults"]["mappings"] = [{"type": "value", "options": {
            "0": {"text": "CLOSED", "color": "green"}, "1": {"text": "HALF_OPEN", "color": "yellow"},
            "2": {"text": "OPEN", "color": "red"}}}]
    return panel


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard (import it: Dashboards → New → Import, then pick the Prometheus data source)."""
    panels: list[dict[str, Any]] = []
    y = pid = 0
    for row, row_panels in PANELS:
        pid += 1
        panels.append({"id": pid, "type": "row", "title": row, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        for i, (title, unit, targets, kind) in enumerate(row_panels):
            pid += 1
            panels.append(_panel(pid, title, unit, targets, kind, 8 * (i % 3), y + 8 * (i // 3)))
        y += 8 * ((len(row_panels) + 2) // 3)
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus",
                      "pluginName": "Prometheus"}],
        "__requires": [{"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "title": "Trading Tools: copy pipeline", "uid": "tradingtools-pipeline", "tags": ["tradingtools"],
        "timezone": "utc", "schemaVersion": 39, "version": 1, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"}, "editable": True, "panels": panels,
    }


def rules() -> dict[str, Any]:
    """The Prometheus rule file (``rule_files:`` of prometheus.yml; JSON is YAML)."""
    return {"groups": [{"name": "tradingtools", "rules": [
        {"alert": name, "expr": expr, "for": wait, "labels": {"severity": severity},
         "annotations": {"summary": summary}} for name, expr, wait, severity, summary in RULES]}]}


def files() -> dict[str, str]:
    """``deploy/``-relative path → content."""
    return {"grafana/tradingtools.json": json.dumps(dashboard(), indent=1, ensure_ascii=False) + "\n",
            "prometheus/alerts.yaml": json.dumps(rules(), indent=1, ensure_ascii=False) + "\n"}
