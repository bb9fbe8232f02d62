"""Through real Envoy: the auth scheme is case-insensitive (RFC 9110 11.1, RFC 6750), the token is exact."""

from __future__ import annotations

import pytest

from tests.edge.conftest import EdgeStack, raw_request

pytestmark = pytest.mark.integration

PROTECTED = "/subscriptions?followerProxy=0x6af75d4e4aaf700450efbac3708cce1665810ff1"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_any_case_of_the_bearer_scheme_is_accepted(edge: EdgeStack, scheme: str) -> None:
    status, _, body = raw_request(edge.envoy.port, "GET", PROTECTED, {"Authorization": f"{scheme} {edge.tokens[0]}"})
    assert status == 200, body


@pytest.mark.parametrize("header", ["bearer {T}", "Bearer {T}", "bearer  {t}", "bearer{t}", "bearerx {t}",
                                    "xbearer {t}", "bearer {t}."])
def test_the_token_and_the_spacing_stay_exact(edge: EdgeStack, header: str) -> None:
    token = edge.tokens[0]
    status, headers, body = raw_request(edge.envoy.port, "GET", PROTECTED,
                                        {"Authorization": header.format(t=token, T=token.upper())})
    assert status == 401, body
    assert headers.get("www-authenticate") == "Bearer"
