"""The OpenAPI document: generated from the annotations, the committed copy in sync, every reference sound."""

from __future__ import annotations

import json
from typing import Any

from tools import openapi, rest_schema

DOC = openapi.document()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_committed_copy_is_the_generated_document() -> None:
    committed = openapi.DOCS_COPY.read_text()
    assert committed == openapi.render(), (
        "docs/openapi.json is stale: run make proto && cp build/openapi.json docs/openapi.json")


def test_make_proto_writes_the_build_copy() -> None:
    assert json.loads(openapi.BUILD_COPY.read_text()) == DOC


def test_every_annotated_route_is_documented_and_no_internal_one() -> None:
    documented = {(verb.upper(), path) for path, ops in DOC["paths"].items() for verb in ops}
    assert documented == {(r.verb, r.template) for r in rest_schema.routes()}
    assert not any("funding" in path or "perf-action" in path for path in DOC["paths"])
    assert not any("Internal" in name or "Funding" in name or "PerfAction" in name
                   for name in DOC["components"]["schemas"])


def test_every_reference_resolves() -> None:
    schemas = DOC["components"]["schemas"]
    for ref in _refs(DOC):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_bodies_name_their_fields_in_json_spelling_and_allow_no_others() -> None:
    create = DOC["paths"]["/subscriptions"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    subscription = DOC["components"]["schemas"][body]
    sizing = DOC["components"]["schemas"][subscription["properties"]["sizing"]["$ref"].rsplit("/", 1)[1]]
    assert "maxOrderUsd" in sizing["properties"] and sizing["additionalProperties"] is False
    assert sizing["properties"]["maxOrderUsd"]["description"]
    assert [p["name"] for p in create["parameters"]] == ["Idempotency-Key"]


def test_the_json_list_route_is_documented_with_the_list_response() -> None:
    listed = DOC["paths"]["/subscriptions"]["get"]
    assert listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ListSubscriptionsResponse")
    assert [p["name"] for p in listed["parameters"]] == [
        "followerProxy", "leaderProxy", "state", "pageSize", "pageToken"]
    assert DOC["paths"]["/subscriptions/{id}"]["patch"]["parameters"][1]["name"] == "updateMask"


def test_probes_need_no_token_and_the_rest_does() -> None:
    for path in ("/health", "/ready"):
        assert DOC["paths"][path]["get"]["security"] == [] and "401" not in DOC["paths"][path]["get"]["responses"]
    assert DOC["security"] == [{"bearer": []}]
    assert "security" not in DOC["paths"]["/triggers"]["post"]
