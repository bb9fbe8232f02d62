"""A compact REST fuzzer driven by the OpenAPI document (hypothesis strategies; no I/O here).

``RestFuzz(doc, ...).cases()`` draws one HTTP request for one documented operation: path ids (known ids,
random text, raw percent-escapes, invalid UTF-8), query values from each parameter's schema (valid, out of
range, wrong type, undecodable) plus unknown parameters, a body built from the request schema or mutated
from a seed body (wrong types, edge values, one injected unknown field whose path is recorded), raw
malformed bodies, and headers (token or not, content types, idempotency keys, forged x-envoy-*). A case
records the unknown field it injected when the edge must answer exactly ``<path>: unknown field``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

Draw = Callable[..., Any]
JsonSchema = dict[str, Any]
PLAIN_ID = re.compile(r"^[A-Za-z0-9_-]+$")
# What a message must never show: exception text, SQL, stack frames, Envoy's reset reasons.
INTERNALS = re.compile(r"Traceback|psycopg|<class '|Exception|Error:|SELECT .* FROM|INSERT INTO|UPDATE \w+ SET|"
                       r"SQLSTATE|sqlstate|File \"|line \d+, in|upstream connect|reset reason|delayed connect")

DECIMALS = ["0", "1", "-1", "0.5", "25", "0.0000001", "1e3", "1E-7", "1e999999", "-0", "NaN", "Infinity",
            "9" * 40, "0." + "0" * 30 + "1", "1_000", " 1", "1 ", "0x10", "", "١٢", "12.34.5", "+5", ".5", "5."]
TEXT_EDGES = ["", " ", "\u0000", "a\u0000b", "\t", "\n", "\u202e", "\U0001F600", "' OR 1=1 --", "%s%s%n",
              "../../etc/passwd", "<script>", "\\", "\"", "x" * 300, "é" * 200]
INT_EDGES = [0, -1, 1, 500, 501, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**63) - 1, 2**64, 10**30]


@dataclass(frozen=True, slots=True)
class Case:
    """One request, ready to send byte for byte."""

    operation: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    unknown: str | None = None  # "sizing.maxOrderUSD": the edge must name it (see expects_unknown_field)
    plain: bool = True  # no escape in the path, a token, no extra query: the request reaches the body check

    def headers_say(self, content_type: str) -> bool:
        """True when the request's Content-Type is ``content-type``."""
        return any(k.lower() == "content-type" and v.startswith(content_type) for k, v in self.headers)

    def expects_unknown_field(self) -> bool:
        """True when the only acceptable answers are that 400 (or a 429 / 413 before it)."""
        return self.unknown is not None and self.plain


@dataclass
class RestFuzz:
    """Strategies over ``doc``'s operations. ``ids`` holds real ids per first path segment
    (``{"subscriptions": [...]}``), ``seeds`` valid bodies per operationId, ``addresses`` known wallets."""

    doc: Mapping[str, Any]
    token: str
    ids: Mapping[str, Sequence[str]] = field(default_factory=dict)
    seeds: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    addresses: Sequence[str] = ()

    def operations(self) -> list[tuple[str, str, JsonSchema]]:
        """(path template, method, operation) of every documented operation."""
        return [(path, method, op) for path, ops in self.doc["paths"].items() for method, op in ops.items()]

    def resolve(self, schema: JsonSchema) -> JsonSchema:
        while "$ref" in schema:
            schema = self.doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    # -- values -----------------------------------------------------------------------------------------

    def _string(self, draw: Draw, schema: JsonSchema) -> Any:
        if "enum" in schema:
            return draw(st.one_of(st.sampled_from(schema["enum"]), st.sampled_from(schema["enum"]).map(str.lower),
                                  st.text(max_size=12), st.integers(-2, 9)))
        choices = [st.sampled_from(DECIMALS), st.sampled_from(TEXT_EDGES), st.text(max_size=40),
                   st.from_regex(r"0x[0-9a-fA-F]{40}", fullmatch=True), st.from_regex(r"[a-z]{3}_[0-9A-Z]{26}")]
        if self.addresses:
            choices.append(st.sampled_from(list(self.addresses)))
        if schema.get("format") == "date-time":
            choices.append(st.sampled_from(["2026-11-20T10:00:00Z", "2026-13-40T99:00:00Z", "yesterday",
                                            "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z"]))
        return draw(st.one_of(*choices))

    def value(self, draw: Draw, schema: JsonSchema, depth: int = 0) -> Any:
        """A JSON value for ``schema``: usually of its type, sometimes any other."""
        schema = self.resolve(schema)
        if depth > 6 or draw(st.integers(0, 19)) == 0:
            return draw(self.any_json())
        kind = schema.get("type")
        if kind == "object":
            if "properties" in schema:
                names = sorted(schema["properties"])
                chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))) if names else []
                return {n: self.value(draw, schema["properties"][n], depth + 1) for n in chosen}
            extra = schema.get("additionalProperties")
            values = self.resolve(extra) if isinstance(extra, dict) else {}
            return {draw(st.text(max_size=10)): self.value(draw, values, depth + 1)
                    for _ in range(draw(st.integers(0, 3)))}
        if kind == "array":
            count = draw(st.integers(0, 4)) if draw(st.integers(0, 30)) else draw(st.integers(50, 300))
            return [self.value(draw, schema.get("items", {}), depth + 1) for _ in range(count)]
        if kind == "integer":
            return draw(st.one_of(st.sampled_from(INT_EDGES), st.integers(-1000, 1000), st.integers().map(str)))
        if kind == "boolean":
            return draw(st.one_of(st.booleans(), st.sampled_from(["true", 1, 0, "yes"])))
        if kind == "number":
            return draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(DECIMALS)))
        if kind == "string":
            return self._string(draw, schema)
        return draw(self.any_json())

    @staticmethod
    def any_json() -> st.SearchStrategy[Any]:
        scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                            st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
        return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                            max_leaves=8)

    # -- one unknown field -------------------------------------------------------------------------------

    def _objects(self, value: Any, schema: JsonSchema, path: str) -> list[tuple[Any, JsonSchema, str]]:
        """Every object in ``value`` that its schema describes with named properties, with its Lua path."""
        schema = self.resolve(schema)
        found: list[tuple[Any, JsonSchema, str]] = []
        if isinstance(value, dict) and "properties" in schema:
            found.append((value, schema, path))
            for name, child in value.items():
                if name in schema["properties"]:
                    found += self._objects(child, schema["properties"][name], f"{path}.{name}" if path else name)
        elif isinstance(value, list):  # as the edge reads it: an array where an object belongs holds objects
            for i, item in enumerate(value):
                found += self._objects(item, schema.get("items", schema), f"{path}[{i}]")
        return found

    def inject_unknown(self, draw: Draw, body: Any, schema: JsonSchema) -> str | None:
        """Add one key the schema does not know to one of ``body``'s objects; its path (None: no object)."""
        targets = self._objects(body, schema, "")
        if not targets or any(set(node) - _known(s) for node, s, _ in targets):
            return None  # no object to put it in, or the body has an unknown key already
        node, node_schema, path = draw(st.sampled_from(targets))
        known = _known(node_schema)
        real = sorted(node_schema["properties"]) or ["field"]
        typo = st.sampled_from(real).flatmap(lambda n: st.sampled_from(
            [n.upper(), n[:-1], n + "s", n[0].upper() + n[1:], n.replace("Usd", "USD"), n + "_", "_" + n]))
        name = draw(st.one_of(typo, st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=16))
                    .filter(lambda k: k not in known))
        node[name] = self.value(draw, {})
        return f"{path}.{name}" if path else name

    # -- requests ----------------------------------------------------------------------------------------

    def _path_id(self, draw: Draw, segment: str) -> tuple[str, bool]:
        known = list(self.ids.get(segment, ()))
        choices: list[st.SearchStrategy[tuple[str, bool]]] = [
            st.from_regex(r"[a-z]{3}_[0-9A-Z]{26}", fullmatch=True).map(lambda s: (s, True)),
            st.text(min_size=1, max_size=30).map(lambda s: (quote(s, safe=""), PLAIN_ID.match(s) is not None)),
            st.binary(min_size=1, max_size=8).map(lambda b: ("".join(f"%{x:02X}" for x in b), False)),
            st.sampled_from([("%ED%A0%80", False), ("..", False), (".", False), ("x" * 600, True),
                             ("funding", False), ("a%2Fb", False)]),
        ]
        if known:
            choices.insert(0, st.sampled_from(known).map(lambda s: (s, True)))
        return draw(st.one_of(*choices))

    def _query(self, draw: Draw, params: Sequence[JsonSchema]) -> tuple[str, bool]:
        """The query string, and whether it holds an extra (maybe foreign or repeated) parameter."""
        pairs: list[str] = []
        for param in params:
            if param["in"] != "query" or draw(st.integers(0, 2)) == 0:
                continue
            if draw(st.integers(0, 4)) == 0:  # raw bytes, often not UTF-8
                text = "".join(f"%{x:02X}" for x in draw(st.binary(max_size=6)))
            else:
                raw = self.value(draw, param["schema"], depth=5)
                text = quote(raw if isinstance(raw, str) else json.dumps(raw), safe="")
            pairs.append(f"{param['name']}={text}")
        extra = draw(st.integers(0, 9)) == 0
        if extra:
            pairs.append(draw(st.sampled_from(["nope=1", "page_size=2", "pageSize=1&pageSize=2", "=", "&&",
                                               "followerProxy", "x=%ZZ", "a.b.c=1"])))
        return ("?" + "&".join(pairs) if pairs else ""), extra

    def _headers(self, draw: Draw) -> tuple[list[tuple[str, str]], bool]:
        headers: list[tuple[str, str]] = []
        authorized = draw(st.integers(0, 9)) > 0
        if authorized:
            headers.append(("Authorization", f"Bearer {self.token}"))
        elif draw(st.booleans()):
            headers.append(("Authorization", draw(st.sampled_from(["Bearer ", "Basic eDp5", "Bearer x" * 3]))))
        content_type = draw(st.sampled_from(["application/json"] * 6 + [
            "text/plain", "application/json; charset=utf-16", "application/grpc", "application/x-www-form-urlencoded",
            ""]))
        if content_type:
            headers.append(("Content-Type", content_type))
        printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                            max_size=40)
        for name in draw(st.lists(st.sampled_from(["Idempotency-Key", "X-Request-Id", "x-envoy-retry-on",
                                                   "x-envoy-upstream-rq-timeout-ms", "X-Forwarded-For",
                                                   "Accept-Encoding", "traceparent"]), max_size=3, unique=True)):
            headers.append((name, draw(printable).strip()))
        return headers, authorized and content_type in ("application/json", "text/plain")

    def _raw_body(self, draw: Draw) -> bytes:
        return draw(st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"{", b"[]", b"null", b'"x"', b"{}", b'{"a":1}', b'{"label": "\xed\xa0\x80"}',
                             b'{"label": "\\udc00"}', b"[" * 200 + b"]" * 200, b'{"a":' * 70 + b"1" + b"}" * 70,
                             b'{"label": 1e99999}', b"\xef\xbb\xbf{}", b'{"label":"x"}{"label":"y"}']),
        ))

    def case(self, draw: Draw) -> Case:
        """One request for one operation."""
        template, method, op = draw(st.sampled_from(self.operations()))
        plain = True
        path = template
        for variable in re.findall(r"\{([^}]+)\}", template):
            segment = template.strip("/").split("/", 1)[0]
            text, ok = self._path_id(draw, segment)
            plain = plain and ok and "funding" not in text.lower() and "perf-action" not in text.lower()
            path = path.replace("{" + variable + "}", text)
        query, extra = self._query(draw, op.get("parameters", []))
        path += query
        headers, gets_through = self._headers(draw)
        plain = plain and gets_through and not extra  # a parameter the route does not take is refused first
        body: bytes | None = None
        unknown: str | None = None
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        shape = draw(st.integers(0, 9))
        if schema is not None and shape < 8:
            seeds = list(self.seeds.get(op["operationId"], ()))
            if seeds and draw(st.booleans()):
                value = json.loads(json.dumps(draw(st.sampled_from(seeds))))
                for _ in range(draw(st.integers(0, 2))):
                    _mutate(draw, self, value, schema)
            else:
                value = self.value(draw, schema)
            if draw(st.integers(0, 3)) == 0:
                unknown = self.inject_unknown(draw, value, schema)
            body = json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        elif shape >= 8:
            body = self._raw_body(draw)
        return Case(op["operationId"], method.upper(), path, tuple(headers), body, unknown, plain)

    def cases(self) -> st.SearchStrategy[Case]:
        """The strategy of requests."""
        return st.composite(lambda draw: self.case(draw))()


def _known(schema: JsonSchema) -> set[str]:
    """The keys an object of ``schema`` may carry: JSON names and proto (snake_case) names."""
    return set(schema["properties"]) | {re.sub(r"([A-Z])", r"_\1", n).lower() for n in schema["properties"]}


def _mutate(draw: Draw, fuzz: RestFuzz, value: Any, schema: JsonSchema) -> None:
    """Replace one value somewhere in ``value`` (an object) by one drawn for its schema (or any JSON)."""
    targets = fuzz._objects(value, schema, "")
    if not targets:
        return
    node, node_schema, _ = draw(st.sampled_from(targets))
    name = draw(st.sampled_from(sorted(node_schema["properties"])))
    node[name] = fuzz.value(draw, node_schema["properties"][name])
