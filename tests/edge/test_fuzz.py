"""The REST surface fuzzed from its OpenAPI document through real Envoy and control: never a 5xx, every error
JSON without internals, every injected unknown field named.

``make test`` runs ``TT_REST_FUZZ_EXAMPLES`` cases (default 300, the same ones every run); a longer run draws
new ones: ``TT_REST_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/edge/test_fuzz.py -s``.
"""

from __future__ import annotations

import http.client
import os
import secrets
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from tests.edge.conftest import EdgeStack
from tests.edge.restfuzz import INTERNALS, Case, RestFuzz
from tools import openapi

pytestmark = pytest.mark.integration

DEFAULT_EXAMPLES = 300
EXAMPLES = int(os.environ.get("TT_REST_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
ASSET = "50343297147712368405712938127538102374911265471938208913723189234816304906499"


def _address() -> str:
    return "0x" + secrets.token_hex(20)


def _subscription() -> dict[str, Any]:
    return {"followerUserId": "u_fuzz", "followerWalletId": "w_" + secrets.token_hex(4), "followerProxy": _address(),
            "leaderProxy": _address(), "mode": "EXECUTION_MODE_PAPER", "label": "fuzz",
            "sizing": {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25", "maxOrderUsd": "100"},
            "filters": {"minPrice": "0.05", "marketDenylist": ["btc-updown-5m"], "maxSlippageBps": 200},
            "risk": {"maxOpenPositions": 20}, "exits": {"ladder": [{"gainPct": "20", "sellFraction": "0.5"}]},
            "perf": {"lossStopUsd": "400"}}


def _trigger(wallet: str) -> dict[str, Any]:
    return {"wallet": wallet, "followerWalletId": "w_fuzz", "assetId": ASSET, "kind": "TRIGGER_KIND_STOP_LOSS",
            "triggerPrice": "0.22", "size": "40"}


@pytest.fixture(scope="module")
def fuzz(edge: EdgeStack) -> RestFuzz:
    """The fuzzer, with a few real subscriptions and triggers to aim at and valid bodies to mutate."""
    subs, wallets = [_subscription() for _ in range(3)], [_address() for _ in range(2)]
    with edge.client() as c:
        sub_ids = [c.post("/subscriptions", json=s).json()["id"] for s in subs]
        trg_ids = [c.post("/triggers", json=_trigger(w)).json()["id"] for w in wallets]
    seeds = {"CreateSubscription": [_subscription()], "UpdateSubscription": [{"label": "x", "sizing": {"ratio": "2"}}],
             "CreateTrigger": [_trigger(wallets[0])], "UpdateTrigger": [{"triggerPrice": "0.3"}],
             "PauseSubscription": [{"reason": "holiday"}]}
    return RestFuzz(openapi.document(), edge.tokens[0], ids={"subscriptions": sub_ids, "triggers": trg_ids},
                    seeds=seeds, addresses=[s["followerProxy"] for s in subs] + wallets)


def send(port: int, case: Case) -> tuple[int, dict[str, str], bytes]:
    """The case's request, byte for byte, on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest(case.method, case.path, skip_host=False, skip_accept_encoding=True)
        for name, value in case.headers:
            conn.putheader(name, value.encode("latin-1"))
        if case.body is not None:
            conn.putheader("Content-Length", str(len(case.body)))
        conn.endheaders(case.body)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def check(case: Case, status: int, headers: dict[str, str], data: bytes) -> None:
    """What every answer must be."""
    assert status < 500, (status, data[:300])
    if headers.get("content-type", "").startswith("application/grpc"):  # Envoy's own reply to a gRPC client
        assert headers.get("grpc-status") not in (None, "0") and case.headers_say("application/grpc"), headers
        return
    if status >= 400:
        body = orjson.loads(data)
        assert isinstance(body.get("code"), int) and isinstance(body.get("message"), str), body
        assert not INTERNALS.search(body["message"]), body
    elif "content-encoding" not in headers:
        orjson.loads(data)
    if case.expects_unknown_field() and status not in (413, 429):
        assert status == 400 and orjson.loads(data)["message"] == f"{case.unknown}: unknown field", data[:300]


@pytest.mark.timeout(max(120, EXAMPLES // 10))
def test_the_rest_surface_never_answers_5xx(edge: EdgeStack, fuzz: RestFuzz) -> None:
    statuses: Counter[int] = Counter()
    operations: Counter[str] = Counter()
    injected = Counter[bool]()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= DEFAULT_EXAMPLES, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz.cases())
    def one(case: Case) -> None:
        status, headers, data = send(edge.envoy.port, case)
        statuses[status] += 1
        operations[case.operation] += 1
        injected[case.expects_unknown_field()] += 1
        check(case, status, headers, data)

    one()
    print(f"\nREST fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}, "
          f"{injected[True]} with an unknown field to name, per operation {dict(sorted(operations.items()))}")
    assert len(operations) == len(fuzz.operations())  # every operation was tried
