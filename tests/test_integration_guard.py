"""The integration-marker guard (tests/integration_guard.py) fails an unmarked test that starts a server."""

from __future__ import annotations

import pytest

INNER = '''
import socket
import subprocess
import sys

import grpc
import pytest


@pytest.fixture
def pg_server_url():
    return "postgresql://stand-in"


def test_unmarked_with_a_server_fixture(pg_server_url):
    pass


@pytest.fixture
def db_url(pg_server_url):
    return pg_server_url + "/db"


def test_unmarked_with_a_fixture_built_on_one(db_url):
    pass


def test_unmarked_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()


def test_unmarked_starts_a_subprocess():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


async def test_unmarked_starts_a_grpc_server():
    grpc.aio.server()


@pytest.fixture
def listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def test_unmarked_with_a_fixture_that_listens(listening):
    pass


@pytest.mark.integration
def test_marked_with_a_server_fixture(db_url):
    assert db_url.endswith("/db")


def test_unmarked_and_pure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
'''


def test_unmarked_tests_that_start_servers_fail_and_the_rest_pass(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ("tests.integration_guard",)\n')
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
                     "markers =\n    integration: starts servers\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rfE")
    result.assert_outcomes(passed=2, failed=3, errors=3)
    result.stdout.fnmatch_lines_random([
        "*test_unmarked_with_a_server_fixture uses fixtures that start servers (pg_server_url)*",
        "*test_unmarked_with_a_fixture_built_on_one uses fixtures that start servers (pg_server_url)*",
        "*ServerInUnitTest: a test not marked integration listened on a socket*",
        "*ServerInUnitTest: a test not marked integration started a subprocess*",
        "*ServerInUnitTest: a test not marked integration created a gRPC server*",
    ])


def test_what_the_guard_refused_works_again_after_the_test() -> None:
    import os
    import socket
    import subprocess

    import grpc

    from tests.integration_guard import _servers_refused
    before = (vars(socket.socket).get("listen"), vars(subprocess.Popen)["_execute_child"], os.fork, grpc.aio.server)
    with _servers_refused(), pytest.raises(Exception, match="listened on a socket"):
        socket.socket.listen(socket.socket())
    after = (vars(socket.socket).get("listen"), vars(subprocess.Popen)["_execute_child"], os.fork, grpc.aio.server)
    assert after == before
