"""Starting Milvus Lite: a start that dies of a signal is tried again, any other death is not.

The server here is a stand-in (a few lines of Python in place of ``milvus-lite server``, see
``_standin``): what is tested is how :class:`MilvusLiteServer` treats its child's death at
start, which the real server only shows now and then (gRPC's event engine aborting on busy cores).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from kubemate_cli.embedded.milvus import MilvusLiteServer, MilvusNotAvailable
from kubemate_cli.embedded.processes import free_port


def _standin(marker: Path, port: int, deaths: int, how: str) -> str:
    """A server that dies ``deaths`` times (``how``: abort or exit), then listens on ``port``."""
    return textwrap.dedent(
        f"""
        import os, pathlib, socket, sys, time
        marker = pathlib.Path({str(marker)!r})
        died = int(marker.read_text()) if marker.exists() else 0
        if died < {deaths}:
            marker.write_text(str(died + 1))
            print("dying", flush=True)
            os.abort() if {how!r} == "abort" else sys.exit(3)
        listener = socket.create_server(("127.0.0.1", {port}))
        print("listening", flush=True)
        time.sleep(60)
        """
    )


class _StandInServer(MilvusLiteServer):
    def __init__(self, tmp_path: Path, deaths: int, how: str, attempts: int = 3) -> None:
        super().__init__(
            tmp_path / "data",
            port=free_port("127.0.0.1"),
            log_path=tmp_path / "milvus.log",
            start_timeout_s=20,
            start_attempts=attempts,
        )
        self.marker = tmp_path / "deaths"
        self.script = _standin(self.marker, self.port, deaths, how)

    def argv(self) -> list[str]:
        return [sys.executable, "-c", self.script]

    def deaths(self) -> int:
        return int(self.marker.read_text()) if self.marker.exists() else 0


def test_a_start_aborted_by_a_signal_is_tried_again(tmp_path: Path) -> None:
    server = _StandInServer(tmp_path, deaths=2, how="abort")
    with server:
        assert server.poll() is None  # the third start is up
        assert server.deaths() == 2
    assert server.poll() is None and server.pid is None  # stopped and forgotten


def test_aborts_beyond_the_attempts_are_reported_with_the_output(tmp_path: Path) -> None:
    server = _StandInServer(tmp_path, deaths=5, how="abort", attempts=2)
    with pytest.raises(MilvusNotAvailable, match=r"exited with code -6 during start(.|\n)*dying"):
        server.start()
    assert server.deaths() == 2 and server.pid is None


def test_a_server_that_exits_with_an_error_is_not_started_again(tmp_path: Path) -> None:
    """An exit code of its own (a bad data directory, say) would only repeat: reported at once."""
    server = _StandInServer(tmp_path, deaths=1, how="exit")
    with pytest.raises(MilvusNotAvailable, match="exited with code 3 during start"):
        server.start()
    assert server.deaths() == 1
