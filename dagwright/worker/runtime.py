"""The entrypoint of the worker image: run the job's command as a child,
heartbeat for it, forward SIGTERM with a grace period, exit with its code.

    python -m dagwright.worker -- python train.py --epochs 10
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagwright.names import PodEnv
from dagwright.worker.env import JobEnv
from dagwright.worker.report import ReportError, Reports

log = logging.getLogger("dagwright.worker")


class Runtime:
    def __init__(
        self,
        command: Sequence[str],
        env: JobEnv,
        heartbeat_seconds: float = 30.0,
        grace_seconds: float = 25.0,
    ):
        self.command = list(command)
        self.env = env
        self.heartbeat_seconds = heartbeat_seconds
        self.grace_seconds = grace_seconds
        self.progress_file = Path(tempfile.mkdtemp(prefix="dagwright-")) / "progress.json"
        self._done = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._reports = (
            Reports(env.api_url, env.token_file) if env.reports and env.api_url else None
        )

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        child_env = {**os.environ, PodEnv.PROGRESS_FILE: str(self.progress_file)}
        try:
            self._child = subprocess.Popen(self.command, env=child_env)
        except OSError as exc:
            log.error("cannot start %s: %s", self.command[0], exc)
            return 127
        beats = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beats.start()
        code = self._child.wait()
        self._done.set()
        beats.join(timeout=5)
        # A child killed by a signal shows as -N; report it the shell's way.
        code = 128 - code if code < 0 else code
        log.info("job %s attempt %s exited with %s", self.env.job, self.env.attempt, code)
        return code

    def _on_term(self, signum: int, frame: object) -> None:
        """Pass the stop on, then give the job ``grace_seconds`` to checkpoint."""
        child = self._child
        if child is None or child.poll() is not None:
            return
        log.info("signal %s: asking the job to stop (%.0fs grace)", signum, self.grace_seconds)
        child.send_signal(signum)
        threading.Thread(target=self._kill_after_grace, daemon=True).start()

    def _kill_after_grace(self) -> None:
        if not self._done.wait(self.grace_seconds) and self._child is not None:
            log.warning("the job did not stop within %.0fs: killing it", self.grace_seconds)
            self._child.kill()

    def _progress(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.progress_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _heartbeats(self) -> None:
        if self._reports is None:
            return
        while True:
            try:
                current = self._reports.heartbeat(self.heartbeat_seconds, self._progress())
            except ReportError as exc:
                log.warning("heartbeat not sent: %s", exc)
            else:
                if not current:
                    # A newer attempt runs (this pod's node was given up for
                    # lost): nothing this one saves counts any more.
                    log.warning("attempt %s was superseded: stopping the job", self.env.attempt)
                    self._on_term(signal.SIGTERM, None)
                    return
            if self._done.wait(self.heartbeat_seconds):
                return


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: python -m dagwright.worker [--] COMMAND [ARG...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dagwright-worker: %(message)s")
    env = JobEnv.from_environ()
    if not env.reports:
        log.info("no DAGWRIGHT_API_URL or token: running without heartbeats and checkpoints")
    runtime = Runtime(
        args,
        env,
        heartbeat_seconds=float(os.environ.get(PodEnv.HEARTBEAT_SECONDS, "30")),
        grace_seconds=float(os.environ.get(PodEnv.GRACE_SECONDS, "25")),
    )
    return runtime.run()
