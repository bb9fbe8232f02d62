"""The dashboard and the alerting rules as files: well-formed, every expression readable, every engine alert
condition covered. (That every metric they read exists is checked on the running stack: tests/e2e.)"""

from __future__ import annotations

import json

import pytest

from common.alerts import AlertKind
from common.config import project_root
from tests.promql import balanced, metric_names
from tools.deploy import monitoring


@pytest.mark.parametrize(("expr", "names"), [
    ("sum(rate(router_orders_total[1m]))", {"router_orders_total"}),
    ('sum by (state, venue) (rate(executor_orders_total{state="LOST", x=~"a|b"}[5m])) > 0',
     {"executor_orders_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(x_milliseconds_bucket[5m]))) > 50", {"x_milliseconds_bucket"}),
    ("max by (stream) (a_seconds) - on (stream) group_right max by (stream, consumer) (b_seconds)",
     {"a_seconds", "b_seconds"}),
    ('changes(process_start_time_seconds[15m]) >= 3 and on() vector(1) offset 5m', {"process_start_time_seconds"}),
    ('absent_over_time(m{component="by"}[5m])', {"m"}),
    ("x * 2 + y{a='on'} / 1e3", {"x", "y"}),
])
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_expression_is_balanced_and_reads_a_metric() -> None:
    for expr in monitoring.expressions():
        assert balanced(expr), expr
        assert metric_names(expr), expr


def test_the_dashboard_file_panels_and_ids() -> None:
    board = json.loads((project_root() / "deploy/grafana/tradingtools.json").read_text())
    assert board == monitoring.dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for shown in ("copies per second", "latency", "skips", "breaker", "feed", "lag"):
        assert shown in titles
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])


def test_the_rules_file_covers_every_condition_the_engine_alerts_on() -> None:
    [group] = json.loads((project_root() / "deploy/prometheus/alerts.yaml").read_text())["groups"]
    rules = group["rules"]
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"]
    exprs = " ".join(r["expr"] for r in rules)
    covered = {AlertKind.ORDER_LOST: 'state="LOST"', AlertKind.BREAKER_OPENED: 'state="OPEN"',
               AlertKind.BREAKER_CLOSED: "executor_breaker_state",
               AlertKind.SUBSCRIPTION_PAUSED: 'control_perf_actions_total{action="PAUSE"}',
               AlertKind.FEED_STALLED: "ingest_stalls_total", AlertKind.REDEMPTION_FAILED: 'state="FAILED"',
               AlertKind.RECONCILIATION_FAILED: "executor_reconcile_failures_total",
               AlertKind.SERVICE_CRASH_LOOP: "changes(process_start_time_seconds",
               AlertKind.DEAD_LETTERED: "consumer_dead_letters_total",
               AlertKind.RESOLUTION_UNCLEAR: "ingest_resolutions_unclear_total",
               AlertKind.ORDER_CANCEL_REFUSED: 'executor_resolved_order_cancels_total{outcome="REFUSED"}',
               AlertKind.VENUE_ANSWER_IMPLAUSIBLE: "executor_implausible_answers_total",
               AlertKind.FILL_NOT_BOOKED: "executor_fills_of_other_venue_total",
               AlertKind.RESOLUTION_CONTRADICTED: 'ingest_resolutions_total{outcome="CONTRADICTED"}',
               AlertKind.SETTLED_WITHOUT_COUNT: "executor_positions_settled_without_count_total",
               AlertKind.REDEMPTION_OVERDUE: "executor_redemptions_overdue_total"}
    assert set(covered) == set(AlertKind)
    for kind, needle in covered.items():
        assert needle in exprs, kind


def _exprs() -> str:
    return " ".join(expr for _n, expr, _f, _s, _m in monitoring.RULES)


def test_a_log_entry_set_aside_as_a_dead_letter_has_a_rule() -> None:
    """A log entry no gRPC message can carry (a routed trade whose copies are never made) is counted only in
    ``stream_dead_letters_total``: its readers never see it, so ``consumer_dead_letters_total`` does not move."""
    assert "stream_dead_letters_total" in _exprs()


def test_a_webhook_that_keeps_failing_has_a_rule_long_before_the_alerts_expire() -> None:
    [(expr, wait)] = [(e, f) for name, e, f, _s, _m in monitoring.RULES if name == "TradingToolsAlertWebhookFailing"]
    assert "alerts_webhook_posts_total" in expr and 'result="2xx"' in expr and wait == "10m"


def test_alerts_dropped_before_they_could_be_delivered_have_a_rule() -> None:
    assert "alerts_dropped_total" in _exprs()


def test_the_alert_pipelines_own_metrics_and_the_screenings_are_documented() -> None:
    doc = (project_root() / "docs/operations.md").read_text()
    missing = [m for m in ("alerts_dropped_total", "alerts_webhook_posts_total", "stream_dead_letters_total",
                           "executor_implausible_answers_total", "executor_fills_of_other_venue_total")
               if m not in doc]
    assert not missing, f"not in docs/operations.md: {missing}"
