"""Requests the server cannot decode are INVALID_ARGUMENT naming the field, never UNKNOWN with parser text.

gRPC Python parses a request before any servicer code runs; a proto3 string that is not valid UTF-8
(e.g. ``GET /subscriptions?followerProxy=%ED%A0%80``, which the transcoder passes on as bytes) made it
fail with UNKNOWN and the protobuf exception's text, which Envoy answered as a 500. ``DecodeGuard``
swaps each unary handler's deserializer for one that hands the servicer a marker instead of raising,
and the handler then answers ``followerProxy: not valid UTF-8``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from common.protowire import read_varint


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What the guarded deserializer returns for bytes the request type cannot be parsed from."""

    message: str


def bad_utf8_path(message: Descriptor, data: bytes) -> list[str] | None:
    """JSON names down to the first string field of ``data`` that is not valid UTF-8 (None: none found)."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            size, pos = read_varint(data, pos)
            chunk, pos = data[pos:pos + size], pos + size
            field = message.fields_by_number.get(number)
            if field is None:
                continue
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return [field.json_name]
            elif field.message_type is not None:
                inner = bad_utf8_path(field.message_type, chunk)
                if inner is not None:
                    return [field.json_name, *inner]
        else:
            return None
    return None


def undecodable(message: Descriptor, data: bytes, body_field: str = "") -> Undecodable:
    """The marker for ``data``, naming the field when it is a string that is not valid UTF-8.

    ``body_field``: the request field a REST body is read into; paths inside it are given relative to
    the body, as every other 400 of the REST surface names them.
    """
    try:
        path = bad_utf8_path(message, data)
    except IndexError:
        path = None
    if path is None:
        return Undecodable("request: could not be decoded")
    if body_field and len(path) > 1 and path[0] == message.fields_by_name[body_field].json_name:
        path = path[1:]
    return Undecodable(f"{'.'.join(path)}: not valid UTF-8")


def _body_field(method: Any) -> str:
    """The field a REST body is read into by the method's HTTP rule ("" for none or ``*``)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return ""
    body = str(options.Extensions[annotations_pb2.http].body)
    return "" if body == "*" else body


def guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` with a deserializer that never raises (unary requests only; others unchanged)."""
    if handler.request_streaming or handler.request_deserializer is None:
        return handler
    try:
        described = descriptor_pool.Default().FindMethodByName(method.lstrip("/").replace("/", "."))
    except KeyError:
        return handler
    request_type, body_field = described.input_type, _body_field(described)
    parse = handler.request_deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return undecodable(request_type, data, body_field)

    kwargs: dict[str, Any] = {"request_deserializer": deserialize,
                              "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        unary: Callable[..., Any] = handler.unary_unary

        async def unary_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_call, **kwargs)
    streaming: Callable[..., Any] = handler.unary_stream  # type: ignore[assignment]  # the other unary kind

    async def stream_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        async for reply in streaming(request, context):
            yield reply

    return grpc.unary_stream_rpc_method_handler(stream_call, **kwargs)


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Applies :func:`guarded` to every method. Last in the interceptor list: it guards the servicer's own
    handler, and a token check before it refuses a call without a valid token UNAUTHENTICATED before its
    request is read, whatever its bytes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return guarded(handler, handler_call_details.method)
