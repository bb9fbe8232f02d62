"""JSON logging to stdout, one object per line, with the trace id of the work being logged.

Every line carries ``trace_id`` / ``span_id`` (W3C hex) when it belongs to a trace: from an explicit
``extra={"trace_id": ...}``, else from a ``traceparent`` extra (a copy's ``TraceContext.traceparent``, which
every event carries even when spans are not exported), else from the OpenTelemetry span current when the line
is logged. A log collector (a container's stdout) can then join a line to its trace.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import orjson
from opentelemetry import trace

from common.config import ConfigError

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_NO_TRACE = "0" * 32


def trace_fields(record: logging.LogRecord) -> dict[str, str]:
    """``trace_id`` and ``span_id`` of ``record`` ({} when it belongs to no trace or names its own)."""
    fields = record.__dict__
    if "trace_id" in fields:
        return {}
    traceparent = fields.get("traceparent")
    if isinstance(traceparent, str):
        match = _TRACEPARENT.match(traceparent)
        if match is not None and match.group(1) != _NO_TRACE:
            return {"trace_id": match.group(1), "span_id": match.group(2)}
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
    return {}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; ``extra=`` fields become top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(trace_fields(record))
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(env: Mapping[str, str] | None = None) -> str:
    """``TT_LOG_LEVEL`` (every service's log level; default INFO), validated."""
    env = os.environ if env is None else env
    level = (env.get("TT_LOG_LEVEL") or "INFO").strip().upper()
    if level not in LEVELS:
        raise ConfigError(f"TT_LOG_LEVEL must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


def setup_logging(service: str, level: str | None = None, stream: IO[str] | None = None) -> None:
    """Route all logging to ``stream`` (stdout) as JSON lines tagged with ``service``, at ``level`` (default:
    ``TT_LOG_LEVEL``)."""
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or log_level()).upper())
    logging.getLogger("grpc").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
