"""The demo's last part: where each service's Prometheus metrics are, and an alert the engine delivered to the
local webhook receiver during the Insiders 5xx storm (the circuit breaker opening), with its signature checked."""

from __future__ import annotations

import time
from collections.abc import Callable

from common.alerts import verify
from common.metrics import METRICS_PORTS
from sim.webhook import Received
from tools.demo_rest import DemoFailure
from tools.pipeline import Pipeline

Printer = Callable[[str], None]
SERVICES = tuple(METRICS_PORTS)


def delivered(p: Pipeline) -> list[Received]:
    """The alerts the webhook receiver took so far."""
    return list(p.sim.call(lambda: list(p.sim.webhook.received)))


def storm_alert(p: Pipeline, timeout_s: float = 30.0) -> Received:
    """The BREAKER_OPENED alert of the storm, once control delivered it."""
    deadline = time.monotonic() + timeout_s
    while True:
        opened = [r for r in delivered(p) if r.alert.get("kind") == "BREAKER_OPENED"]
        if opened:
            return opened[0]
        if time.monotonic() > deadline:
            raise DemoFailure(f"no BREAKER_OPENED alert reached the webhook within {timeout_s:g}s of the storm")
        time.sleep(0.1)


def show(p: Pipeline, out: Printer) -> None:
    """Print the metrics endpoints, the dashboard and rules, and the storm's alert as the webhook got it."""
    out("  Prometheus metrics of each service (while the stack runs):")
    for name in SERVICES:
        out(f"    {name:9} {p.metrics_url(name)}")
    out("  Grafana dashboard: deploy/grafana/tradingtools.json (Import, pick the Prometheus data source); "
        "alerting rules: deploy/prometheus/alerts.yaml")
    alert = storm_alert(p)
    secret = p.env.get("TT_ALERT_WEBHOOK_SECRET", "")
    signed = verify(secret, alert.headers.get("x-tt-timestamp", ""), alert.raw,
                    alert.headers.get("x-tt-signature", ""))
    if not signed:
        raise DemoFailure("the storm's alert reached the webhook without a valid X-TT-Signature")
    kinds = sorted({str(r.alert.get("kind")) for r in delivered(p)})
    out(f"  Alerts delivered to the local webhook ({p.env.get('TT_ALERT_WEBHOOK_URL')}): {len(delivered(p))} "
        f"({', '.join(kinds)}). The 5xx storm's, as a Slack channel would show it (HMAC-SHA256 signature ✓):")
    for line in alert.text.splitlines():
        out(f"    │ {line}")
