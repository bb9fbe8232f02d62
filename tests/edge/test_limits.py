"""The local rate limits (the API's bucket and the probes' own), in dedicated Envoys with tiny token buckets."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.edge.conftest import EdgeStack, Envoy, raw_request, start_envoy
from tests.helpers import eventually_sync

pytestmark = pytest.mark.integration

BURST = 3


@pytest.fixture(scope="module")
def tight_envoy(edge: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    """Envoy allowing one request a second after a burst of three, in front of the shared control."""
    envoy = start_envoy(Path(tmp_path_factory.mktemp("tight")), edge.control_port, edge.tokens,
                        rate_limit_per_s=1, rate_limit_burst=BURST)
    try:
        yield envoy
    finally:
        envoy.stop()


def test_rate_limit_answers_429_json_once_the_bucket_is_empty(edge: EdgeStack, tight_envoy: Envoy) -> None:
    path = "/subscriptions?followerProxy=0x6af75d4e4aaf700450efbac3708cce1665810ff1"
    replies = [raw_request(tight_envoy.port, "GET", path, edge.auth()) for _ in range(BURST + 4)]
    statuses = [status for status, _, _ in replies]
    assert statuses[:BURST] == [200] * BURST
    assert statuses.count(200) <= BURST + 1  # one refill may land during the loop
    limited = [(headers, body) for status, headers, body in replies if status == 429]
    assert len(limited) >= 2
    for headers, body in limited:
        assert headers["content-type"] == "application/json"
        assert body == {"code": 8, "message": "rate limit exceeded", "details": []}
        assert headers["x-ratelimit-limit"]


def test_probes_have_a_bucket_of_their_own(edge: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A flood of probes gets 429s from its own bucket while API calls keep theirs, and the other way round."""
    envoy = start_envoy(Path(tmp_path_factory.mktemp("probes")), edge.control_port, edge.tokens,
                        rate_limit_per_s=1, rate_limit_burst=BURST, probe_rate_limit_per_s=1,
                        probe_rate_limit_burst=BURST)
    path = "/subscriptions?followerProxy=0x6af75d4e4aaf700450efbac3708cce1665810ff1"
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            flood = [pool.submit(raw_request, envoy.port, "GET", "/ready" if i % 2 else "/health")
                     for i in range(200)]
            api = [raw_request(envoy.port, "GET", path, edge.auth())[0] for _ in range(BURST)]
            probes = [f.result() for f in flood]
        assert api == [200] * BURST  # the flood did not starve the API
        limited = [body for status, _, body in probes if status == 429]
        assert len(limited) >= 200 - 2 * BURST - 10
        assert all(body == {"code": 8, "message": "rate limit exceeded", "details": []} for body in limited)
        assert {status for status, _, _ in probes} <= {200, 429}

        assert raw_request(envoy.port, "GET", path, edge.auth())[0] == 429  # the API bucket is empty now...
        eventually_sync(lambda: raw_request(envoy.port, "GET", "/ready")[0] == 200, timeout_s=5,
                        message="a probe answered from the probe bucket")  # ...and probes refill on their own
    finally:
        envoy.stop()


def test_unauthenticated_floods_do_not_spend_the_callers_budget(edge: EdgeStack,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    envoy = start_envoy(Path(tmp_path_factory.mktemp("flood")), edge.control_port, edge.tokens,
                        rate_limit_per_s=1, rate_limit_burst=BURST)
    try:
        path = "/subscriptions?followerProxy=0x6af75d4e4aaf700450efbac3708cce1665810ff1"
        for _ in range(BURST + 5):
            assert raw_request(envoy.port, "GET", path)[0] == 401
        assert raw_request(envoy.port, "GET", path, edge.auth())[0] == 200
    finally:
        envoy.stop()
