"""``deploy/compose.yaml``: the engine on one Docker host, with real PostgreSQL, Redis and Envoy images.

``docker compose -f deploy/compose.yaml up -d`` (JSON is YAML to compose). Credentials are compose secrets,
files under ``deploy/secrets/`` (``python -m tools.deploy secrets`` creates the missing ones), mounted at
``/run/secrets/<name>``; the image's entry point turns ``<VAR>_FILE`` into ``<VAR>``. PostgreSQL and Redis sit
on an internal network with no published port; only Envoy's REST port is published, on the host's loopback.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.embedded import EMBEDDED_REDIS_AOF
from tools.deploy import spec
from tools.deploy.spec import Component
from tools.envoy_config import ACCESS_LOG_FLUSH_ARGS

DB_USER = "tradingtools"
DB_NAME = "tradingtools"
POSTGRES_PASSWORD = "postgres_password"
REDIS_PASSWORD = "redis_password"
SECRETS_DIR = "secrets"  # beside compose.yaml
# Settings an operator sets from the shell or an .env file beside compose.yaml, with the image's defaults.
OPERATOR_SETTINGS = ("TT_RTDS_URL", "TT_CLOB_WS_URL", "TT_CLOB_API_URL", "TT_DATA_API_URL", "TT_INSIDERS_API_URL")
Obj = dict[str, Any]


def secret_file(variable_or_name: str) -> str:
    """Compose secret name (and file name) of a credential: ``TT_INTERNAL_TOKEN`` → ``internal_token``."""
    return variable_or_name.removeprefix("TT_").lower()


def secret_path(name: str) -> str:
    """Where compose mounts secret ``name`` in a container."""
    return f"/run/secrets/{name}"


def environment(c: Component) -> dict[str, str]:
    """``c``'s variables: the shared settings, operator overridable ones, and ``<VAR>_FILE`` per credential."""
    env = spec.settings()
    for name in OPERATOR_SETTINGS:
        env[name] = f"${{{name}:-{env[name]}}}"
    env.update({f"{var}_FILE": secret_path(secret_file(var)) for var in c.secrets})
    return env


_LOGGING = {"driver": "json-file", "options": {"max-size": "50m", "max-file": "5"}}
_HEALTHY = {"condition": "service_healthy"}


def _hardened(c: Component) -> Obj:
    return {"read_only": True, "tmpfs": ["/tmp"], "restart": "unless-stopped", "stop_grace_period": "30s",
            "mem_limit": f"{c.memory_limit_mi}m", "logging": _LOGGING}


def service(c: Component) -> Obj:
    """A service of the engine: the image running ``python -m services.<name>``."""
    depends: Obj = {"postgres": _HEALTHY, "redis": _HEALTHY}
    if c.name != "control":
        depends["control"] = _HEALTHY  # control applies the migrations at start
    return {
        "image": c.image,
        "command": ["python", "-m", c.module],
        "environment": environment(c),
        "secrets": [secret_file(v) for v in c.secrets],
        "depends_on": depends,
        "healthcheck": {"test": ["CMD", "python", "-m", "tools.deploy.health", str(c.port)],
                        "interval": "10s", "timeout": "5s", "retries": 3, "start_period": "60s"},
        "networks": ["data", "default"],
        **_hardened(c),
    }


def envoy_config() -> Obj:
    """The one-shot render of Envoy's config (and descriptor set) into the volume Envoy reads."""
    return {
        "image": spec.IMAGE,
        "command": ["python", "-m", "tools.deploy.envoy", "--out", f"{spec.ENVOY_CONFIG_DIR}/envoy.yaml"],
        "environment": environment(spec.ENVOY),
        "secrets": [secret_file(v) for v in spec.ENVOY.secrets],
        "volumes": [f"envoy-config:{spec.ENVOY_CONFIG_DIR}"],
        "read_only": True, "tmpfs": ["/tmp"], "restart": "no", "network_mode": "none",
    }


_ENVOY_HEALTH = ("exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /health HTTP/1.1\\r\\nHost: localhost\\r\\n"
                 "Connection: close\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '")


def envoy() -> Obj:
    """Envoy's own image on the rendered config; its REST port published on the host's loopback."""
    c = spec.ENVOY
    return {
        "image": c.image,
        "user": f"{spec.UID}:{spec.UID}",
        "entrypoint": ["envoy"],
        "command": ["-c", f"{spec.ENVOY_CONFIG_DIR}/envoy.yaml", "--disable-hot-restart", "--concurrency", "2",
                    "--log-level", "warn", "--drain-time-s", "5", *ACCESS_LOG_FLUSH_ARGS],
        "ports": [f"127.0.0.1:{c.port}:{c.port}"],
        "volumes": [f"envoy-config:{spec.ENVOY_CONFIG_DIR}:ro"],
        "depends_on": {"envoy-config": {"condition": "service_completed_successfully"}, "control": _HEALTHY},
        "healthcheck": {"test": ["CMD", "bash", "-c", _ENVOY_HEALTH.format(port=c.port)],
                        "interval": "10s", "timeout": "5s", "retries": 3, "start_period": "20s"},
        "networks": ["default"],
        **_hardened(c),
    }


def postgres() -> Obj:
    """PostgreSQL, its data in a named volume."""
    return {
        "image": spec.POSTGRES_IMAGE,
        "environment": {"POSTGRES_USER": DB_USER, "POSTGRES_DB": DB_NAME,
                        "POSTGRES_PASSWORD_FILE": secret_path(POSTGRES_PASSWORD)},
        "secrets": [POSTGRES_PASSWORD],
        "volumes": ["pgdata:/var/lib/postgresql/data"],
        "healthcheck": {"test": ["CMD", "pg_isready", "-U", DB_USER, "-d", DB_NAME],
                        "interval": "5s", "timeout": "3s", "retries": 10, "start_period": "20s"},
        "networks": ["data"], "restart": "unless-stopped", "stop_grace_period": "60s", "logging": _LOGGING,
    }


_AOF_REWRITES = " ".join(f"--{name} {value}" for name, value in EMBEDDED_REDIS_AOF.items())  # as the embedded one's
_REDIS_RUN = ("umask 077 && printf 'requirepass %s\\n' \"$$(cat {secret})\" > /tmp/redis.conf && "
              f"exec redis-server /tmp/redis.conf --appendonly yes --appendfsync everysec {_AOF_REWRITES} --dir /data")
_REDIS_HEALTH = "REDISCLI_AUTH=\"$$(cat {secret})\" redis-cli ping | grep -q PONG"


def redis() -> Obj:
    """Redis with its append-only file on (``appendfsync everysec``, README), rewritten as rarely as the embedded
    one's, a password from a secret."""
    secret = secret_path(REDIS_PASSWORD)
    return {
        "image": spec.REDIS_IMAGE,
        "user": "999:999",  # the image's redis user: owns /data
        "command": ["sh", "-c", _REDIS_RUN.format(secret=secret)],
        "secrets": [REDIS_PASSWORD],
        "volumes": ["redisdata:/data"],
        "healthcheck": {"test": ["CMD-SHELL", _REDIS_HEALTH.format(secret=secret)],
                        "interval": "5s", "timeout": "3s", "retries": 10, "start_period": "10s"},
        "networks": ["data"], "restart": "unless-stopped", "stop_grace_period": "30s", "logging": _LOGGING,
    }


def secret_names() -> list[str]:
    """Every compose secret: the credentials, and the passwords of PostgreSQL and Redis."""
    return [*(secret_file(v) for v in spec.SECRETS), POSTGRES_PASSWORD, REDIS_PASSWORD]


def compose() -> Obj:
    """The whole compose file."""
    services: Obj = {"postgres": postgres(), "redis": redis()}
    services.update({c.name: service(c) for c in spec.SERVICES})
    services["envoy-config"] = envoy_config()
    services["envoy"] = envoy()
    return {
        "name": spec.APP,
        "services": services,
        "networks": {"data": {"internal": True}, "default": {}},
        "volumes": {"pgdata": {}, "redisdata": {}, "envoy-config": {}},
        "secrets": {name: {"file": f"./{SECRETS_DIR}/{name}"} for name in secret_names()},
    }


def text() -> str:
    """``deploy/compose.yaml``."""
    return json.dumps(compose(), indent=2) + "\n"


def create_secret_files(directory: Path) -> list[str]:
    """Create the secret files missing from ``directory`` (never overwrite one); returns the names created.

    Tokens are fresh random hex; the URLs carry the passwords beside them. The folder is private (700), the
    files readable (644): compose bind-mounts them as they are, and the containers' users must read them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    created: list[str] = []

    def ensure(name: str, make: Callable[[], str]) -> str:
        path = directory / name
        if not path.exists():
            path.write_text(make())
            os.chmod(path, 0o644)
            created.append(name)
        return path.read_text().strip()

    for name in (secret_file(spec.CONTROL_API_TOKEN), secret_file(spec.INTERNAL_TOKEN)):
        ensure(name, lambda: secrets.token_hex(32))
    db_password = ensure(POSTGRES_PASSWORD, lambda: secrets.token_hex(24))
    redis_password = ensure(REDIS_PASSWORD, lambda: secrets.token_hex(24))
    ensure(secret_file(spec.DATABASE_URL), lambda: f"postgresql://{DB_USER}:{db_password}@postgres:5432/{DB_NAME}")
    ensure(secret_file(spec.REDIS_URL), lambda: f"redis://:{redis_password}@redis:6379/0")
    for var in sorted(spec.OPTIONAL_SECRETS):
        ensure(secret_file(var), str)
    return created
