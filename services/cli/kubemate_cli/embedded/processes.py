"""Child processes and local ports: what the supervisor and the backends it starts share.

:class:`ProcessChild` runs a command in its own process group with its output appended to a log
file; the port helpers pick free local ports and spell URLs. The supervisor
(:mod:`kubemate_cli.embedded.supervisor`) and the Redis and Milvus servers it starts
(:mod:`~kubemate_cli.embedded.redis`, :mod:`~kubemate_cli.embedded.milvus`) import them from here,
so neither side imports the other.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubemate.logs import get_logger

log = get_logger(__name__)

LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


# ---- one child process -------------------------------------------------------------------------


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _child_preexec(parent_pid: int) -> Callable[[], None] | None:
    if _LIBC is None:
        return None
    libc = _LIBC

    def preexec() -> None:
        # Linux only: the kernel sends SIGTERM to the child if the supervisor dies without
        # stopping it (SIGKILL, OOM), so a crashed `kubemate up` leaves no orphans behind.
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def read_log_tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written after ``offset`` (this run's output only)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            # Enough bytes for the wanted lines of any sane log, without reading a huge file.
            start = max(offset, size - 256 * lines)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class ProcessChild:
    """A child process in its own process group, its output appended to a log file."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_path: Path, offset: int):
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._log_offset = offset

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ProcessChild:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab", buffering=0) as logf:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            logf.write(f"=== {stamp} starting {name}: {' '.join(argv)}\n".encode())
            offset = logf.tell()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                # Own session and process group: a Ctrl-C in the terminal reaches only the
                # supervisor, which then stops the children in order; and killpg reaches a
                # child's own children too.
                start_new_session=True,
                preexec_fn=_child_preexec(os.getpid()),
            )
        return cls(name, proc, log_path, offset)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_code(self) -> int | None:
        """The exit code once the child has exited (negative: killed by that signal).

        The child is not reaped here: while it is a zombie its pid keeps naming its process
        group, so :meth:`stop` can still sweep the group without hitting a recycled pid.
        """
        if self.proc.returncode is not None:
            return self.proc.returncode
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.poll()
        if info is None:
            return None
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return read_log_tail(self.log_path, self._log_offset, lines)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace_s: float, hurry: Callable[[], bool] = lambda: False) -> int:
        """SIGTERM the group, SIGKILL it after ``grace_s``; returns the exit code."""
        if self.proc.returncode is None and self.exit_code() is None:
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.exit_code() is None and time.monotonic() < deadline and not hurry():
                time.sleep(0.05)
            if self.exit_code() is None:
                log.warning("child.kill", name=self.name, pid=self.pid, grace_s=grace_s)
        if self.proc.returncode is None:
            # Also reaches anything the child left in its group (a worker's pool processes).
            self._signal_group(signal.SIGKILL)
        return self.proc.wait()


# ---- ports -------------------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As uvicorn and redis do, so that a port in TIME_WAIT counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pick_port(host: str, preferred: int | None, taken: set[int]) -> int:
    """``preferred`` when free, else any free port; never one already in ``taken``."""
    if preferred and preferred not in taken and port_is_free(host, preferred):
        taken.add(preferred)
        return preferred
    while True:
        port = free_port(host)
        if port not in taken:
            taken.add(port)
            return port


LOOPBACK = "127.0.0.1"
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def http_url(host: str, port: int) -> str:
    if host in _WILDCARD_HOSTS:
        host = LOOPBACK
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
