"""A real redis-server on a loopback port, for tests and the local demo."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path

from dagwright.devcluster.processes import Process, free_port


class RedisServer:
    """redis-server with AOF on (``appendfsync everysec``, the production
    default whose loss window the fault tests exercise)."""

    def __init__(self, workdir: Path | None = None, port: int | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="dagwright-redis-"))
        self.port = port or free_port()
        self.process = Process(
            "redis-server",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            self.workdir / "redis.log",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 15.0) -> None:
        self.process.start()
        deadline = time.monotonic() + timeout
        while not self._ping():
            self.process.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer PING within {timeout}s")
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop cleanly and start again on the same port and AOF."""
        self.process.stop()
        self.start()

    def crash_and_restart(self) -> None:
        """kill -9, then start again: whatever AOF had synced survives."""
        self.process.kill()
        self.start()

    def stop(self) -> None:
        self.process.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
