"""The services' process-wide gRPC setting: a default set before grpc is imported, an operator's value kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import services, grpc, os; print(os.environ['GRPC_EXPERIMENTS'])"


@pytest.mark.parametrize(("given", "expected"), [
    (None, "-event_engine_client"),
    ("", ""),
    ("-event_engine_listener", "-event_engine_listener"),
])
def test_services_default_grpc_experiments_unless_the_operator_set_them(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if given is not None:
        env["GRPC_EXPERIMENTS"] = given
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == expected
