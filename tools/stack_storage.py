"""The run folder's layout and the embedded servers ``make up`` starts when no URL is configured."""

from __future__ import annotations

import json
import os
import secrets
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tools.procs import is_alive, proc_starttime, terminate

Printer = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StackPaths:
    """Where the stack keeps its state."""

    run: Path

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    @property
    def pgdata(self) -> Path:
        return self.run / "pg" / "data"

    @property
    def redis_dir(self) -> Path:
        return self.run / "redis"

    @property
    def envoy_config(self) -> Path:
        return self.run / "envoy" / "envoy.yaml"

    @property
    def spec(self) -> Path:
        return self.run / "programs.json"

    @property
    def owned(self) -> Path:
        """What ``up`` started besides the supervisor (embedded servers), for ``down``."""
        return self.run / "stack.json"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def read_owned(paths: StackPaths) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(paths.owned.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def quiet(call: Callable[[], T]) -> T:
    """Run a pgserver call without its XDG_RUNTIME_DIR warning (noise for a CLI)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        return call()


def _listener_ports(env: Mapping[str, str]) -> set[int]:
    """Ports the stack's services and Envoy will listen on, resolved as they resolve them."""
    from common.config import SERVICE_PORTS, grpc_port
    from tools.envoy_config import listen_ports

    return {*(grpc_port(env, name) for name in SERVICE_PORTS), *listen_ports(env)}


def _free_port_off(taken: set[int]) -> int:
    """A free port that is not in ``taken`` (a port picked free earlier for a service that has not
    bound it yet would otherwise be handed out again: embedded Redis took control's port once)."""
    from common.embedded import free_port_off

    return free_port_off(taken)


def ensure_storage(env: dict[str, str], paths: StackPaths, out: Printer) -> dict[str, Any]:
    """Start embedded PostgreSQL / Redis where no URL is configured; return what was started."""
    from common.embedded import ping_redis, start_postgres, start_redis

    owned = read_owned(paths)
    if not env.get("DATABASE_URL", "").strip():
        url = quiet(lambda: start_postgres(paths.pgdata))
        _write_private(paths.run / "database_url", url + "\n")
        owned["postgres"] = str(paths.pgdata)
        out(f"postgres: embedded, data in {paths.pgdata}")
    else:
        owned.pop("postgres", None)
        out("postgres: DATABASE_URL")
    if not env.get("REDIS_URL", "").strip():
        url_file = paths.run / "redis_url"
        pid = int(owned.get("redis_pid") or 0)
        if (url_file.exists() and is_alive(pid, owned.get("redis_starttime"))
                and ping_redis(url_file.read_text().strip())):
            out(f"redis: embedded (already running, pid {pid})")
        else:
            port = _free_port_off(_listener_ports(env))
            # a unix socket (when its path fits): on one host it costs less CPU a command than loopback TCP
            url, pid = start_redis(paths.redis_dir, port, durable=True, unix_socket=True)
            _write_private(url_file, url + "\n")
            owned["redis_pid"], owned["redis_port"] = pid, port
            owned["redis_starttime"] = proc_starttime(pid)
            out(f"redis: embedded on {url}, append-only file in {paths.redis_dir}")
    else:
        owned.pop("redis_pid", None)
        owned.pop("redis_starttime", None)
        owned.pop("redis_port", None)
        out("redis: REDIS_URL")
    paths.owned.write_text(json.dumps(owned, indent=1))
    return owned


def restart_redis(paths: StackPaths) -> int:
    """Start this run folder's embedded Redis again on its address after it died, from its append-only file;
    returns the new pid (recorded for ``down``)."""
    from common.embedded import start_redis

    url = (paths.run / "redis_url").read_text().strip()
    owned = read_owned(paths)
    port = int(owned.get("redis_port") or url.rsplit(":", 1)[1].split("/", 1)[0])
    _, pid = start_redis(paths.redis_dir, port, durable=True, unix_socket=url.startswith("unix://"))
    owned["redis_pid"], owned["redis_starttime"] = pid, proc_starttime(pid)
    paths.owned.write_text(json.dumps(owned, indent=1))
    return pid


def ensure_token(env: Mapping[str, str], paths: StackPaths, out: Printer) -> None:
    """Generate the 64-hex control API token and the internal token into the run folder when unset.

    They are two different tokens: the control token opens control's public API (the backend's, through
    Envoy), the internal one every service's gRPC port (``common.grpcauth``).
    """
    from common.grpcauth import INTERNAL_TOKEN_FILE, INTERNAL_TOKEN_VAR

    for label, variable, name in (("token", "CONTROL_API_TOKEN", "control_api_token"),
                                  ("internal token", INTERNAL_TOKEN_VAR, INTERNAL_TOKEN_FILE)):
        if env.get(variable, "").strip():
            out(f"{label}: {variable}")
            continue
        path = paths.run / name
        if not path.exists() or not path.read_text().strip():
            _write_private(path, secrets.token_hex(32) + "\n")
            out(f"{label}: generated into {path} (mode 600)")
        else:
            out(f"{label}: {path}")


def stop_storage(paths: StackPaths) -> list[str]:
    """Stop the embedded Redis and PostgreSQL of this run folder; the names of those that ran."""
    from common.embedded import stop_postgres

    stopped: list[str] = []
    owned = read_owned(paths)
    if terminate(int(owned.get("redis_pid") or 0), owned.get("redis_starttime"), 10.0):
        stopped.append("redis")
    if (paths.pgdata / "postmaster.pid").exists():
        quiet(lambda: stop_postgres(paths.pgdata))
        stopped.append("postgres")
    if "postgres" in owned:
        (paths.run / "database_url").unlink(missing_ok=True)
    if "redis_pid" in owned:
        (paths.run / "redis_url").unlink(missing_ok=True)
    paths.owned.unlink(missing_ok=True)
    return stopped
