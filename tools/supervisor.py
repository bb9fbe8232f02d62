"""The process supervisor behind ``make up``: one process per layer, restarted when it crashes.

Like a PM2 set-up: every program runs as its own child process with its output appended to
``<run dir>/logs/<name>.log``. A program that exits is restarted after a backoff that doubles
with each fast crash (one that ran less than ``min_uptime_s``); after ``max_fast_crashes`` fast
crashes in a row the supervisor gives up on it loudly (error log, state ``errored``, the
SERVICE_CRASH_LOOP alert: :mod:`tools.crash_alert`) and keeps the others running. SIGTERM/SIGINT
stop the gateway first, then every service, then the supervisor. The supervisor's view of its children
is kept in ``<run dir>/supervisor.json`` for ``up``, ``down`` and ``status``.

Log files are rotated by size (``tools.logrotate``: ``TT_STACK_LOG_MAX_MB``, ``TT_STACK_LOG_KEEP``), checked
about once a second.

SIGHUP reloads the program list from the spec file: programs added since are started, programs
removed are stopped, the others keep running. A one-shot environment for the next start of one
program can be left in ``<run dir>/once/<name>.json`` (a JSON object of variables): the supervisor
applies it to that start only and deletes the file (tests use it to arm a crash hook).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tools.logrotate import LogRotation, rotate_large
from tools.procs import is_alive, proc_starttime
from tools.restarts import RestartPolicy, after_exit

log = logging.getLogger("tools.supervisor")

STATE_FILE = "supervisor.json"
ONCE_DIR = "once"
GATEWAY = "envoy"
ROTATE_CHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class Program:
    """One supervised process."""

    name: str
    argv: tuple[str, ...]








@dataclass
class Child:
    """A program and its current process."""

    program: Program
    state: str = "starting"
    pid: int = 0
    starttime: int | None = None
    restarts: int = 0
    fast_crashes: int = 0
    last_exit: int | None = None
    started_mono: float = 0.0
    restart_at: float | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Supervisor:
    """Runs programs, restarts them when they exit, stops them on SIGTERM/SIGINT."""

    def __init__(self, programs: Sequence[Program], run_dir: Path, policy: RestartPolicy,
                 env: Mapping[str, str], rotation: LogRotation | None = None,
                 on_give_up: Callable[[str, int, int], object] = lambda _name, _code, _crashes: None) -> None:
        """``on_give_up(program, exit_code, fast_crashes)`` learns that a program is given up (it must not block)."""
        self.on_give_up = on_give_up
        self.children = [Child(p) for p in programs]
        self.run_dir = run_dir
        self.logs_dir = run_dir / "logs"
        self.policy = policy
        self.rotation = LogRotation() if rotation is None else rotation
        self._rotated_mono = 0.0
        self.env = dict(env)
        self.stopping = False
        self.state_path = run_dir / STATE_FILE

    def log_path(self, name: str) -> Path:
        """Where a program's output goes."""
        return self.logs_dir / f"{name}.log"

    def _note(self, child: Child, text: str) -> None:
        """Append a supervisor line to the program's own log, so its story reads in one place."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.log_path(child.program.name).open("a") as fh:
            fh.write(f"[supervisor {stamp}] {text}\n")

    def _once_env(self, child: Child) -> dict[str, str]:
        """The one-shot variables left for this program's next start (consumed), or {}."""
        path = self.run_dir / ONCE_DIR / f"{child.program.name}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            self._note(child, f"ignoring unreadable one-shot environment {path}: {exc}")
            data = {}
        path.unlink(missing_ok=True)
        extra = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        if extra:
            self._note(child, f"one-shot environment for this start: {', '.join(sorted(extra))}")
        return extra

    def _spawn(self, child: Child) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, **self._once_env(child)}
        out: IO[bytes] = self.log_path(child.program.name).open("ab")
        try:
            proc = subprocess.Popen(list(child.program.argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, close_fds=True)
        except OSError as exc:
            out.close()
            log.error("cannot start program", extra={"program": child.program.name, "error": str(exc)})
            self._note(child, f"cannot start: {exc}")
            self._exited(child, 127)
            return
        out.close()
        child.proc = proc
        child.pid = proc.pid
        child.starttime = proc_starttime(proc.pid)
        child.started_mono = time.monotonic()
        child.state = "running"
        child.restart_at = None
        log.info("program started", extra={"program": child.program.name, "pid": proc.pid,
                                            "restarts": child.restarts})

    def _exited(self, child: Child, code: int, *, stopped: bool = False) -> None:
        uptime = time.monotonic() - child.started_mono if child.started_mono else 0.0
        child.proc = None
        child.pid = 0
        child.starttime = None
        child.last_exit = code
        if self.stopping or stopped:
            child.state = "stopped"
            return
        decision = after_exit(self.policy, child.fast_crashes, uptime)
        child.fast_crashes = decision.fast_crashes
        if decision.give_up:
            child.state = "errored"
            log.error("program keeps crashing; giving up on it",
                      extra={"program": child.program.name, "exit_code": code,
                             "fast_crashes": decision.fast_crashes, "log": str(self.log_path(child.program.name))})
            self._note(child, f"exited with {code}; {decision.fast_crashes} fast crashes in a row: "
                              "GIVING UP (fix it, then make down && make up)")
            self.on_give_up(child.program.name, code, decision.fast_crashes)
            return
        child.state = "backoff"
        child.restart_at = time.monotonic() + decision.delay_s
        log.warning("program exited; restarting", extra={"program": child.program.name, "exit_code": code,
                                                          "uptime_s": round(uptime, 3),
                                                          "delay_s": decision.delay_s})
        self._note(child, f"exited with {code} after {uptime:.1f}s; restarting in {decision.delay_s:.1f}s")

    def _rotate_logs(self) -> None:
        """Rotate the log files past their size limit, at most once per ``ROTATE_CHECK_S``."""
        now = time.monotonic()
        if now - self._rotated_mono < ROTATE_CHECK_S:
            return
        self._rotated_mono = now
        try:
            done = rotate_large(self.logs_dir, self.rotation)
        except OSError as exc:
            log.error("cannot rotate the log files", extra={"error": str(exc)})
            return
        if done:
            log.info("log files rotated", extra={"files": [p.name for p in done]})

    def write_state(self) -> None:
        """Publish the children's state atomically."""
        data: dict[str, Any] = {
            "pid": os.getpid(),
            "starttime": proc_starttime(os.getpid()),
            "pgid": os.getpgid(0),
            "stopping": self.stopping,
            "programs": [
                {"name": c.program.name, "state": c.state, "pid": c.pid, "starttime": c.starttime,
                 "restarts": c.restarts, "last_exit": c.last_exit,
                 "log": str(self.log_path(c.program.name))}
                for c in self.children
            ],
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.state_path)

    def _reap(self) -> bool:
        changed = False
        for child in self.children:
            if child.proc is not None:
                code = child.proc.poll()
                if code is not None:
                    self._exited(child, code)
                    changed = True
        return changed

    def _due_restarts(self) -> bool:
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.state == "backoff" and child.restart_at is not None and child.restart_at <= now:
                child.restarts += 1
                self._spawn(child)
                changed = True
        return changed

    def _next_wakeup(self) -> float:
        due = [c.restart_at for c in self.children if c.state == "backoff" and c.restart_at is not None]
        if not due:
            return 1.0
        return max(0.0, min(1.0, min(due) - time.monotonic()))

    def _stop_group(self, children: Sequence[Child]) -> None:
        live = [c for c in children if c.proc is not None]
        for child in live:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.policy.stop_grace_s
        for child in live:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("program ignored SIGTERM; killing it", extra={"program": child.program.name})
                child.proc.kill()
                child.proc.wait()
            code = child.proc.returncode
            self._exited(child, code, stopped=True)
            log.info("program stopped", extra={"program": child.program.name, "exit_code": code})
        for child in children:
            if child.state in ("backoff", "starting"):
                child.state = "stopped"

    def stop_all(self) -> None:
        """Stop the gateway first (no new requests), then every other program at once."""
        self.stopping = True
        self.write_state()
        self._stop_group([c for c in self.children if c.program.name == GATEWAY])
        self._stop_group([c for c in self.children if c.program.name != GATEWAY])
        self.write_state()

    def reload(self, programs: Sequence[Program]) -> None:
        """Adopt a new program list: start the new ones, stop the removed ones, keep the rest."""
        wanted = {p.name: p for p in programs}
        removed = [c for c in self.children if c.program.name not in wanted or c.program != wanted[c.program.name]]
        if removed:
            self._stop_group(removed)
            self.children = [c for c in self.children if c not in removed]
        known = {c.program.name for c in self.children}
        for program in programs:
            if program.name not in known:
                child = Child(program)
                self.children.append(child)
                self._spawn(child)
        order = list(wanted)
        self.children.sort(key=lambda c: order.index(c.program.name))
        log.info("programs reloaded", extra={"programs": order, "stopped": [c.program.name for c in removed]})

    def run(self, spec_path: Path | None = None) -> int:
        """Supervise until SIGTERM/SIGINT (SIGHUP reloads ``spec_path``); returns the exit code."""
        rfd, wfd = socket.socketpair()
        rfd.setblocking(False)
        wfd.setblocking(False)
        signal.set_wakeup_fd(wfd.fileno(), warn_on_full_buffer=False)

        reload_wanted = False

        def on_stop(signum: int, _frame: object) -> None:
            self.stopping = True

        def on_hup(signum: int, _frame: object) -> None:
            nonlocal reload_wanted
            reload_wanted = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log.info("supervisor started", extra={"programs": [c.program.name for c in self.children]})
        for child in self.children:
            self._spawn(child)
        self.write_state()
        while not self.stopping:
            select.select([rfd], [], [], self._next_wakeup())
            try:
                while rfd.recv(512):
                    pass
            except BlockingIOError:
                pass
            if self.stopping:
                break
            changed = self._reap() | self._due_restarts()
            self._rotate_logs()
            if reload_wanted and spec_path is not None:
                reload_wanted = False
                try:
                    self.reload(programs_from_json(spec_path.read_text()))
                except (OSError, ValueError, KeyError) as exc:
                    log.error("cannot reload the program list", extra={"error": str(exc)})
                changed = True
            if changed:
                self.write_state()
        log.info("supervisor stopping")
        self.stop_all()
        log.info("supervisor stopped")
        return 0


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The supervisor's last published state, or None."""
    path = run_dir / STATE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def supervisor_alive(state: Mapping[str, Any] | None) -> bool:
    """Whether the supervisor that wrote ``state`` still runs."""
    if not state:
        return False
    return is_alive(int(state.get("pid") or 0), state.get("starttime"))


def programs_to_json(programs: Sequence[Program]) -> str:
    """Serialise the program list handed to the supervisor process."""
    return json.dumps([asdict(p) for p in programs], indent=1)


def programs_from_json(text: str) -> list[Program]:
    """Inverse of :func:`programs_to_json`."""
    return [Program(name=p["name"], argv=tuple(p["argv"])) for p in json.loads(text)]


def main(spec_path: Path, run_dir: Path) -> int:
    """Entry point of the detached supervisor process."""
    from common.logs import setup_logging
    from tools.crash_alert import crash_loop_alert

    setup_logging("supervisor")
    programs = programs_from_json(spec_path.read_text())
    supervisor = Supervisor(programs, run_dir, RestartPolicy.from_env(os.environ), os.environ,
                            LogRotation.from_env(os.environ), on_give_up=crash_loop_alert)
    try:
        return supervisor.run(spec_path)
    except Exception:
        log.exception("supervisor crashed; stopping every program")
        supervisor.stop_all()
        return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
