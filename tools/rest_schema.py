"""The REST surface as the protos declare it (pure): every RPC with a ``google.api.http`` annotation.

Read from the descriptor set ``make proto`` writes (``build/tradingtools.pb``). The Envoy config (which
services the transcoder serves, which paths reach control, the unknown-field check's schema), the OpenAPI
document and the REST fuzzer all derive from :func:`routes`, so a new annotated RPC is covered by each
without a list to extend.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from common.config import project_root

DEFAULT_DESCRIPTOR = project_root() / "build" / "tradingtools.pb"
VERBS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")

# Well-known messages whose proto3 JSON form is a scalar (string, number) or anything at all.
SCALAR_MESSAGES = frozenset({
    "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask",
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
})
ANY_JSON_MESSAGES = frozenset({
    "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any",
    "google.protobuf.Empty",
})


@dataclass(frozen=True, slots=True)
class Route:
    """One annotated RPC: ``verb template`` → ``service/method``."""

    service: str
    method: str
    verb: str
    template: str
    body: str
    request: Descriptor
    response: Descriptor

    @property
    def grpc_path(self) -> str:
        """``/pkg.Service/Method``."""
        return f"/{self.service}/{self.method}"

    @property
    def path_fields(self) -> tuple[str, ...]:
        """Field paths bound by the path template, in order (``{id}`` → ``id``)."""
        return tuple(m.group(1) for m in _VARIABLE.finditer(self.template))

    @property
    def segments(self) -> tuple[str | None, ...]:
        """The template's segments, ``None`` for a one-segment variable and ``"**"`` for a rest-of-path one."""
        out: list[str | None] = []
        for part in _VARIABLE.sub(lambda m: "\0" + (m.group(2) or "*") + "\0", self.template).strip("/").split("/"):
            if part.startswith("\0"):
                out.append("**" if part.strip("\0") == "**" else None)
            else:
                out.append(part)
        return tuple(out)

    def body_message(self) -> Descriptor | None:
        """The message the JSON body is read as (``None``: the route takes no body, or a scalar one)."""
        if not self.body:
            return None
        if self.body == "*":
            return self.request
        field = self.request.fields_by_name[self.body]
        return field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None

    def query_fields(self) -> tuple[tuple[str, FieldDescriptor], ...]:
        """(dotted proto path, field) of every leaf the query string may set: neither in the path nor the body."""
        if self.body == "*":
            return ()
        bound = {*self.path_fields, self.body}
        return tuple((path, field) for path, field in _leaves(self.request, "", set())
                     if path not in bound and path.split(".", 1)[0] not in bound)


def _leaves(message: Descriptor, prefix: str, seen: set[str]) -> Iterator[tuple[str, FieldDescriptor]]:
    for field in message.fields:
        path = prefix + field.name
        nested = field.message_type
        if nested is None or nested.full_name in SCALAR_MESSAGES:
            yield path, field
        elif not is_repeated(field) and nested.full_name not in seen | ANY_JSON_MESSAGES:
            yield from _leaves(nested, path + ".", seen | {nested.full_name})


def is_repeated(field: FieldDescriptor) -> bool:
    """True for repeated fields and maps."""
    return bool(field.is_repeated)


def is_map(field: FieldDescriptor) -> bool:
    """True for ``map<K, V>`` fields."""
    nested = field.message_type
    return nested is not None and nested.GetOptions().map_entry


@cache
def load(path: Path = DEFAULT_DESCRIPTOR) -> tuple[descriptor_pool.DescriptorPool, descriptor_pb2.FileDescriptorSet]:
    """A descriptor pool of the set at ``path`` (FileNotFoundError when ``make proto`` has not run)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    return pool, fds


def routes(path: Path = DEFAULT_DESCRIPTOR, package: str = "tradingtools.") -> tuple[Route, ...]:
    """Every annotated RPC of the project's packages, in declaration order."""
    pool, fds = load(Path(path))
    out: list[Route] = []
    for file in fds.file:
        if not file.package.startswith(package):
            continue
        for service in file.service:
            full = f"{file.package}.{service.name}"
            described = pool.FindServiceByName(full)
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for r in (rule, *rule.additional_bindings):
                    verb = r.WhichOneof("pattern")
                    if verb not in VERBS:
                        continue  # "custom" verbs: none in the protos
                    md = described.methods_by_name[method.name]
                    out.append(Route(full, method.name, verb.upper(), getattr(r, verb), r.body,
                                     md.input_type, md.output_type))
    return tuple(out)


def transcoded_services(all_routes: Sequence[Route]) -> tuple[str, ...]:
    """The services Envoy transcodes: those with at least one annotated RPC (internal ones have none)."""
    return tuple(dict.fromkeys(r.service for r in all_routes))


def top_segments(all_routes: Sequence[Route]) -> tuple[str, ...]:
    """The first path segments of the routes (``subscriptions``, ``triggers``, ``health``, ...)."""
    return tuple(dict.fromkeys(r.template.strip("/").split("/", 1)[0] for r in all_routes))


@cache
def comments(path: Path = DEFAULT_DESCRIPTOR) -> dict[str, str]:
    """Leading comments by full name (``pkg.Msg``, ``pkg.Msg.field``, ``pkg.Svc.Method``, ``pkg.Enum.VALUE``)."""
    _, fds = load(Path(path))
    out: dict[str, str] = {}
    for file in fds.file:
        names = _element_names(file)
        for loc in file.source_code_info.location:
            name = names.get(tuple(loc.path))
            if name and loc.leading_comments.strip():
                out[name] = " ".join(line.strip() for line in loc.leading_comments.strip().splitlines())
    return out


def _element_names(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Source-location path → full name for messages (and their fields), enums (and values), methods."""
    names: dict[tuple[int, ...], str] = {}

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str) -> None:
        full = f"{scope}.{e.name}"
        names[path] = full
        for i, v in enumerate(e.value):
            names[(*path, 2, i)] = f"{full}.{v.name}"

    def message(m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> None:
        full = f"{scope}.{m.name}"
        names[path] = full
        for i, f in enumerate(m.field):
            names[(*path, 2, i)] = f"{full}.{f.name}"
        for i, n in enumerate(m.nested_type):
            message(n, (*path, 3, i), full)
        for i, e in enumerate(m.enum_type):
            enum(e, (*path, 4, i), full)

    for i, m in enumerate(file.message_type):
        message(m, (4, i), file.package)
    for i, e in enumerate(file.enum_type):
        enum(e, (5, i), file.package)
    for si, s in enumerate(file.service):
        names[(6, si)] = f"{file.package}.{s.name}"
        for mi, rpc in enumerate(s.method):
            names[(6, si, 2, mi)] = f"{file.package}.{s.name}.{rpc.name}"
    return names
