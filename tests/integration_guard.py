"""Keeps the ``integration`` marker true, so ``make test-unit`` (``-m "not integration"``) runs pure tests only.

A test that is not marked ``integration`` fails

- before its fixtures are set up, when it uses a fixture that starts servers (:data:`SERVER_FIXTURES`, or
  any fixture built on one of them);
- while it sets up and runs (not in tear-down, which may stop servers earlier tests started), when it
  listens on a socket, starts a subprocess, forks, or creates a gRPC server.

Either failure names what was started; the fix is ``pytestmark = pytest.mark.integration`` in the file
(or the marker on the test).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import grpc
import pytest

# Fixtures that start servers themselves; every fixture that requests one of them (db_url, redis_url, r,
# harness, stack, control, edge, pipeline, ...) is covered through pytest's fixture closure.
SERVER_FIXTURES = frozenset({
    "pg_server_url",  # embedded PostgreSQL
    "redis_server_url",  # embedded Redis
    "sim",  # tests/ingest: the Polymarket simulator's websocket and HTTP servers
})

MARK_IT = "mark it @pytest.mark.integration (pytestmark = pytest.mark.integration for the whole file)"


class ServerInUnitTest(Exception):
    """A test without the integration marker started a server or a process."""


def is_integration(item: pytest.Item) -> bool:
    """Whether ``item`` carries the integration marker (on itself, its class or its module)."""
    return item.get_closest_marker("integration") is not None


def _refuse(what: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise ServerInUnitTest(f"a test not marked integration {what}: {MARK_IT}")
    return refuse


@contextmanager
def _servers_refused() -> Iterator[None]:
    """Within: listening, subprocesses, forks and gRPC servers raise :class:`ServerInUnitTest`."""
    patches: list[tuple[Any, str, str]] = [
        (socket.socket, "listen", "listened on a socket"),
        (subprocess.Popen, "_execute_child", "started a subprocess"),
        (os, "fork", "forked"),
        (os, "posix_spawn", "started a process"),
        (grpc, "server", "created a gRPC server"),
        (grpc.aio, "server", "created a gRPC server"),
    ]
    with ExitStack() as undo:
        for owner, name, what in patches:
            if name in vars(owner):
                undo.callback(setattr, owner, name, vars(owner)[name])
            else:  # inherited (socket.socket.listen): uncover it again
                undo.callback(delattr, owner, name)
            setattr(owner, name, _refuse(what))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a test without the marker that would start servers through its fixtures; refuse the rest."""
    if is_integration(item):
        return (yield)
    used = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if used:
        pytest.fail(f"{item.nodeid} uses fixtures that start servers ({', '.join(used)}): {MARK_IT}",
                    pytrace=False)
    with _servers_refused():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Run a test without the marker with servers and processes refused."""
    if is_integration(item):
        return (yield)
    with _servers_refused():
        return (yield)
