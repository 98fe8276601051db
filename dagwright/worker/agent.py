"""The node agent (a DaemonSet of the worker image, one pod per node): it
registers its node in dagwright's worker registry and heartbeats for it, so
a dead machine is told from a slow control plane by the machine's own
silence, in seconds rather than the node controller's 50.

    python -m dagwright.worker.agent

It registers as the node (``hostname`` = the Node's name, from the downward
API), heartbeats every ``DAGWRIGHT_AGENT_INTERVAL_SECONDS`` (2) under a
timeout of ``DAGWRIGHT_AGENT_TIMEOUT_SECONDS`` (10), and unregisters (drains
the node) when stopped: a drained or shut-down node gets no new jobs.
Standard library only."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from dagwright.worker.report import ReportError, call

log = logging.getLogger("dagwright.agent")
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
ROUTE = "/api/distributed/workers"


class Agent:
    def __init__(self, env: Mapping[str, str]):
        self.api = env["DAGWRIGHT_API_URL"].rstrip("/") + ROUTE
        self.node = env["NODE_NAME"]
        self.token_file = Path(env.get("DAGWRIGHT_TOKEN_FILE") or SA_TOKEN)
        self.interval = float(env.get("DAGWRIGHT_AGENT_INTERVAL_SECONDS") or 2.0)
        self.timeout = float(env.get("DAGWRIGHT_AGENT_TIMEOUT_SECONDS") or 10.0)
        self.capabilities = [
            c for c in (env.get("DAGWRIGHT_AGENT_CAPABILITIES") or "").split(",") if c
        ]
        self.max_concurrency = int(env.get("DAGWRIGHT_AGENT_MAX_CONCURRENCY") or 4)
        self.stopped = threading.Event()

    @property
    def worker_id(self) -> str:
        return self.node[:63].rstrip("-.") or "node"

    def register(self) -> None:
        body = {
            "workerId": self.worker_id,
            "hostname": self.node,
            "capabilities": self.capabilities,
            "maxConcurrency": self.max_concurrency,
            "heartbeatTimeoutSeconds": self.timeout,
        }
        call("POST", f"{self.api}/register", self.token_file, body)
        log.info("registered node %s (timeout %.0fs)", self.node, self.timeout)

    def run(self) -> int:
        registered = False
        while not self.stopped.is_set():
            try:
                if not registered:
                    self.register()
                    registered = True
                call(
                    "POST",
                    f"{self.api}/{self.worker_id}/heartbeat",
                    self.token_file,
                    {"currentLoad": 0},
                )
            except ReportError as exc:
                if exc.status == 404:
                    registered = False  # lapsed (we were silent too long): again
                log.warning("heartbeat not sent: %s", exc)
            self.stopped.wait(self.interval)
        try:
            call("DELETE", f"{self.api}/{self.worker_id}", self.token_file, None)
            log.info("unregistered node %s: drained", self.node)
        except ReportError as exc:
            log.warning("could not unregister: %s", exc)
        return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dagwright-agent: %(message)s")
    missing = [v for v in ("DAGWRIGHT_API_URL", "NODE_NAME") if not os.environ.get(v)]
    if missing:
        print(f"dagwright agent: set {', '.join(missing)}", file=sys.stderr)
        return 2
    agent = Agent(os.environ)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopped.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stopped.set())
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
