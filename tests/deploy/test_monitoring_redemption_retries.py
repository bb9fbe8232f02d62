"""An overdue redemption (its calls kept failing past their bound; alerted once, retried on) has its own rule, read
from a metric the docs list."""

from __future__ import annotations

import json

from common.config import project_root
from tools.deploy import monitoring

METRIC = "executor_redemptions_overdue_total"


def test_an_overdue_redemption_has_a_critical_rule_in_the_rules_file() -> None:
    [group] = json.loads((project_root() / "deploy/prometheus/alerts.yaml").read_text())["groups"]
    [rule] = [r for r in group["rules"] if METRIC in r["expr"]]
    assert rule["alert"] == "TradingToolsRedemptionOverdue"
    assert rule["labels"]["severity"] == "critical" and rule["for"] == "0m"
    assert "still retried every 5 min" in rule["annotations"]["summary"]
    assert rule["alert"] in {name for name, *_ in monitoring.RULES}


def test_the_metric_and_what_to_check_are_documented() -> None:
    doc = (project_root() / "docs/operations.md").read_text()
    assert METRIC in doc and "REDEMPTION_OVERDUE" in doc and "### An overdue redemption" in doc
    assert "TT_TUNE_EXECUTOR_REDEEM_OVERDUE_FAILURES" in doc and "TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S" in doc
