"""An OpenAPI 3 document of the REST surface, generated from the protos' ``google.api.http`` annotations.

``python -m tools.openapi [--out PATH]`` writes it (``make proto`` writes ``build/openapi.json``); the copy
the Insiders backend reads is ``docs/openapi.json``, kept equal to the generated one by a test. Shapes are
proto3 JSON as the transcoder prints and reads them: lowerCamelCase names, enums by name, 64-bit integers
as strings, Timestamps as RFC 3339 strings. A body may not carry a field the schema does not name (the
edge answers 400), hence ``additionalProperties: false``. An RPC ``XJson`` returning ``google.api.HttpBody``
serves RPC ``X``'s response already printed as JSON, and is documented with that response.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool

from common.config import project_root
from services.control.auth import PROBE_SERVICE
from tools.envoy_config import MAX_BODY_BYTES
from tools.rest_schema import DEFAULT_DESCRIPTOR, Route, comments, is_map, load, routes

OPEN_SERVICES = frozenset({PROBE_SERVICE})  # the REST routes that take no token: the probes
BUILD_COPY = project_root() / "build" / "openapi.json"
DOCS_COPY = project_root() / "docs" / "openapi.json"
HTTP_BODY = "google.api.HttpBody"
Schema = dict[str, Any]

_F = FieldDescriptor
_SCALARS: dict[int, Schema] = {
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    _F.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _F.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _F.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _F.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    _F.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated lowerCamelCase field paths."},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {"type": "object"},
    **{f"google.protobuf.{name}Value": {**_SCALARS[kind], "nullable": True} for name, kind in (
        ("Double", _F.TYPE_DOUBLE), ("Float", _F.TYPE_FLOAT), ("Int64", _F.TYPE_INT64),
        ("UInt64", _F.TYPE_UINT64), ("Int32", _F.TYPE_INT32), ("UInt32", _F.TYPE_UINT32),
        ("Bool", _F.TYPE_BOOL), ("String", _F.TYPE_STRING), ("Bytes", _F.TYPE_BYTES))},
}
ERROR_STATUSES = {
    "400": "Invalid argument or failed precondition; the message starts with the field's JSON path.",
    "401": "Missing or invalid bearer token (WWW-Authenticate: Bearer).",
    "404": "Not found (also every internal or unknown path).",
    "409": "Already exists (a second ACTIVE subscription for one wallet and leader).",
    "413": f"Request body over {MAX_BODY_BYTES} bytes.",
    "429": "Rate limit exceeded.",
    "503": "A dependency (PostgreSQL, Redis, the control service) is unavailable.",
}


class _Builder:
    """Collects component schemas while walking messages."""

    def __init__(self, notes: dict[str, str]) -> None:
        self.notes = notes
        self.schemas: dict[str, Schema] = {}

    def _described(self, schema: Schema, name: str) -> Schema:
        note = self.notes.get(name)
        return {**schema, "description": note} if note and "$ref" not in schema else schema

    def ref(self, message: Descriptor) -> Schema:
        """A ``$ref`` to ``message``'s component schema (built on first use)."""
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # placeholder: recursive messages
            props = {f.json_name: self._described(self.field(f), f.full_name) for f in message.fields}
            self.schemas[message.full_name] = self._described(
                {"type": "object", "properties": props, "additionalProperties": False}, message.full_name)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def enum(self, enum: EnumDescriptor) -> Schema:
        return {"type": "string", "enum": [v.name for v in enum.values]}

    def single(self, field: FieldDescriptor) -> Schema:
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def field(self, field: FieldDescriptor) -> Schema:
        """The schema of a field's JSON value."""
        if field.message_type is not None and is_map(field):
            return {"type": "object", "additionalProperties": self.single(field.message_type.fields_by_name["value"])}
        if field.is_repeated:
            return {"type": "array", "items": self.single(field)}
        return self.single(field)


def _response_message(route: Route, pool: DescriptorPool) -> Descriptor | None:
    """The message a route answers with (None: a body of any content)."""
    if route.response.full_name != HTTP_BODY:
        return route.response
    twin = pool.FindServiceByName(route.service).methods_by_name.get(route.method.removesuffix("Json"))
    if route.method.endswith("Json") and twin is not None:
        return twin.output_type
    return None


def _field_by_path(message: Descriptor, path: str) -> tuple[str, FieldDescriptor]:
    """The JSON spelling of a dotted proto path and its leaf field."""
    names, field = [], None
    for part in path.split("."):
        field = message.fields_by_name[part]
        names.append(field.json_name)
        if field.message_type is not None:
            message = field.message_type
    assert field is not None
    return ".".join(names), field


def _operation(route: Route, build: _Builder, pool: DescriptorPool) -> Schema:
    method_name = f"{route.service}.{route.method}"
    params: list[Schema] = []
    for path in route.path_fields:
        name, field = _field_by_path(route.request, path)
        params.append({"name": path, "in": "path", "required": True, "schema": build.field(field),
                       **({"description": build.notes[field.full_name]} if field.full_name in build.notes else {})})
    for path, field in route.query_fields():
        name, _ = _field_by_path(route.request, path)
        params.append({"name": name, "in": "query", "required": False, "schema": build.field(field),
                       **({"description": build.notes[field.full_name]} if field.full_name in build.notes else {})})
    body = route.body_message()
    if body is not None and "request_id" in body.fields_by_name:
        params.append({"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                       "description": "A replay within 24 h returns the first response and creates nothing new."})
    op: Schema = {"operationId": route.method, "tags": [route.service.rsplit(".", 1)[1]]}
    if method_name in build.notes:
        op["summary"] = build.notes[method_name]
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": build.ref(body)}}}
    out = _response_message(route, pool)
    ok: Schema = {"description": "OK"}
    if out is not None:
        ok["content"] = {"application/json": {"schema": build.ref(out)}}
    op["responses"] = {"200": ok, **{code: {"description": text, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for code, text in ERROR_STATUSES.items()
        if not (code == "401" and route.service in OPEN_SERVICES) and not (code == "413" and body is None)}}
    if route.service in OPEN_SERVICES:
        op["security"] = []
    return op


def _version() -> str:
    with (project_root() / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def document(descriptor: Path = DEFAULT_DESCRIPTOR) -> Schema:
    """The OpenAPI 3.0 document of every annotated route in ``descriptor``."""
    pool, _ = load(descriptor)
    build = _Builder(comments(descriptor))
    paths: dict[str, Schema] = {}
    for route in routes(descriptor):
        paths.setdefault(route.template, {})[route.verb.lower()] = _operation(route, build, pool)
    schemas = {"Error": {
        "type": "object", "required": ["code", "message"], "additionalProperties": False,
        "description": "Every error: the gRPC status code, a message naming the field where one is at fault.",
        "properties": {"code": {"type": "integer", "format": "int32"}, "message": {"type": "string"},
                       "details": {"type": "array", "items": {"type": "object"}}}}}
    schemas.update(dict(sorted(build.schemas.items())))
    return {
        "openapi": "3.0.3",
        "info": {"title": "Trading Tools control API", "version": _version(),
                 "description": "The REST surface the Insiders backend calls, served by Envoy and transcoded to "
                                "the control service's gRPC. Generated from the protos by tools/openapi.py."},
        "servers": [{"url": "http://127.0.0.1:9110"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas},
    }


def render(descriptor: Path = DEFAULT_DESCRIPTOR) -> str:
    """The document as stable, indented JSON text (what is written and compared)."""
    return json.dumps(document(descriptor), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write the document (default ``build/openapi.json``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=BUILD_COPY)
    parser.add_argument("--descriptor", type=Path, default=DEFAULT_DESCRIPTOR)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args.descriptor))
    print(f"openapi document at {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
