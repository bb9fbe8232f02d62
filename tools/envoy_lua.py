"""The Lua of the Envoy edge (pure): the strict-input check with its schema, and the header scrub.

``strict_json_source`` prepends to ``envoy/strict_json.lua`` the ROUTES and MESSAGES tables it reads,
generated from the annotated RPCs (``tools.rest_schema``): every route's body message and its own query
parameters (both spellings: the dotted proto path and the JSON path); for every message reachable from a
body, the names a JSON body may use for each field (the lowerCamelCase JSON name and the proto name, as the
transcoder accepts both) with the field's canonical (JSON) name. ``scrub_headers_source`` gives the header
scrub, which also records the path for the access log with every query parameter that is not a route's
own field (``access_token=...``) replaced by ``REDACTED``, and anything shaped like a token (64 hex
characters or more) too; ``LOG_METHOD_LUA`` records the gRPC method the transcoder chose, scrubbed alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from common.config import project_root
from tools.rest_schema import ANY_JSON_MESSAGES, SCALAR_MESSAGES, Route, is_map

_NAME = re.compile(r"[A-Za-z0-9_.~-]*")
STRICT_JSON_LUA = project_root() / "envoy" / "strict_json.lua"

# A run of hex digits (any of them %-escaped) as long as a bearer token or longer, as ``REDACTED``: a token
# sent in the path or in a known parameter's value never reaches a log file (tokens: 64 hex characters,
# tools.envoy_config.validate_tokens).
REDACT_LUA = """\
local function percent_decoded(text)
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

local function redacted(text)
  return (text:gsub("[%x%%]+", function(run)
    local plain = percent_decoded(run)
    if plain:find(string.rep("%x", 64)) then return "REDACTED" end
  end))
end

local function logged_method(path)
  local q = path:find("?", 1, true)
  return redacted(q and path:sub(1, q - 1) or path)
end
"""

# Runs first on every request: no client-supplied x-envoy-* header reaches a filter, the router (which
# honours x-envoy-upstream-rq-timeout-ms, x-envoy-retry-on, ...) or the access log, and X-Forwarded-For
# is the connection's own address whatever the client sent. The access log's path (dynamic metadata
# tt.log.path) keeps only the query parameters of KNOWN names: a token sent as ?access_token=... never
# reaches a log file; tt.log.method starts as the path without query (LOG_METHOD_LUA sets the gRPC method
# once the transcoder has chosen it). KNOWN is prepended by scrub_headers_source.
SCRUB_HEADERS_LUA = REDACT_LUA + """\
local function logged_path(path)
  local q = path:find("?", 1, true)
  if q == nil then return redacted(path) end
  local kept = {}
  for part in path:sub(q + 1):gmatch("[^&]+") do
    local name = percent_decoded(part:match("^[^=]*"))
    kept[#kept + 1] = KNOWN[name] and part or "REDACTED"
  end
  return redacted(path:sub(1, q) .. table.concat(kept, "&"))
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local forged = {}
  for key, _ in pairs(headers) do
    if key:sub(1, 8) == "x-envoy-" then forged[#forged + 1] = key end
  end
  for _, key in ipairs(forged) do headers:remove(key) end
  local peer = handle:streamInfo():downstreamDirectRemoteAddress() or ""
  local ip = peer:match("^%[(.*)%]:%d+$") or peer:match("^(.*):%d+$") or peer
  headers:replace("x-forwarded-for", ip)
  local path = headers:get(":path") or ""
  local meta = handle:streamInfo():dynamicMetadata()
  meta:set("tt.log", "path", logged_path(path))
  meta:set("tt.log", "method", logged_method(path))
end
"""

# Runs just after the transcoder: the access log's grpc_method becomes the :path it set (the gRPC method).
LOG_METHOD_LUA = REDACT_LUA + """\
function envoy_on_request(handle)
  handle:streamInfo():dynamicMetadata():set("tt.log", "method", logged_method(handle:headers():get(":path") or ""))
end
"""


def _lua(value: object) -> str:
    """A Lua literal for str / bool / list / dict (string keys) values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if not _NAME.fullmatch(value):
            raise ValueError(f"not a proto name or path segment: {value!r}")
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _kind(field: FieldDescriptor) -> object:
    """How the walk treats a field's JSON value (see strict_json.lua): True for a singular bool (a repeated
    one is left to the transcoder, as the walk hands an array's kind to its items)."""
    nested = field.message_type
    if nested is None:
        return field.type == FieldDescriptor.TYPE_BOOL and not field.is_repeated
    if nested.full_name in SCALAR_MESSAGES | ANY_JSON_MESSAGES:
        return False
    if is_map(field):
        return [_kind(nested.fields_by_name["value"])]
    return nested.full_name


def message_tables(roots: Sequence[Descriptor]) -> dict[str, dict[str, object]]:
    """Accepted names → (kind, canonical name) for every message reachable from ``roots`` through message
    fields; the canonical name is the JSON name, so that both spellings of a field are one field."""
    tables: dict[str, dict[str, object]] = {}
    todo = list(roots)
    while todo:
        message = todo.pop()
        if message.full_name in tables:
            continue
        names: dict[str, object] = {}
        for field in message.fields:
            names[field.json_name] = names[field.name] = (_kind(field), field.json_name)
            nested = field.message_type
            if nested is not None:
                value = nested.fields_by_name["value"].message_type if is_map(field) else nested
                if value is not None and value.full_name not in SCALAR_MESSAGES | ANY_JSON_MESSAGES:
                    todo.append(value)
        tables[message.full_name] = names
    return tables


def route_rows(routes: Sequence[Route]) -> list[list[object]]:
    """ROUTES rows ``[verb, segments, body message | False, own query parameters]``, the most literal
    segments first so that ``/a/b`` wins over ``/a/{id}``."""
    rows: list[tuple[int, list[object]]] = []
    for route in routes:
        body = route.body_message()
        segments: list[object] = [True if s == "**" else (False if s is None else s) for s in route.segments]
        rows.append((-sum(isinstance(s, str) for s in segments),
                     [route.verb, segments, body.full_name if body is not None else False, route_query(route)]))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def route_query(route: Route) -> dict[str, str]:
    """Both spellings (dotted proto path, JSON path) of each of ``route``'s own query parameters → the JSON
    path; empty when the body is ``*`` or every field is bound by the path or the body."""
    names: dict[str, str] = {}
    for path, _ in route.query_fields():
        canonical = _json_path(route.request, path)
        names[path] = names[canonical] = canonical
    return names


def query_names(routes: Sequence[Route]) -> dict[str, str]:
    """:func:`route_query` of every route of ``routes``, merged."""
    names: dict[str, str] = {}
    for route in routes:
        names.update(route_query(route))
    return names


def _json_path(message: Descriptor | None, path: str) -> str:
    parts = []
    for name in path.split("."):
        if message is None:
            raise ValueError(f"{path} goes through a scalar field")
        field = message.fields_by_name[name]
        parts.append(field.json_name)
        message = field.message_type
    return ".".join(parts)


def strict_json_source(routes: Sequence[Route]) -> str:
    """The strict-input Lua with its tables for ``routes``."""
    bodies = [b for b in (r.body_message() for r in routes) if b is not None]
    header = (f"local ROUTES = {_lua(route_rows(routes))}\n"
              f"local MESSAGES = {_lua(message_tables(bodies))}\n")
    return header + STRICT_JSON_LUA.read_text()


def scrub_headers_source(routes: Sequence[Route]) -> str:
    """The header-scrub Lua with the query parameter names the access log may show for ``routes``."""
    return f"local KNOWN = {_lua(dict.fromkeys(query_names(routes), True))}\n" + SCRUB_HEADERS_LUA
