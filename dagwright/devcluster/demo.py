"""``make demo``: a local control plane (or kind, or any cluster), Redis, the
operator and the REST API, then ``examples/training-pipeline.yaml`` followed
live until it succeeds. Everything stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from dagwright.devcluster.build import ensure_binaries, ensure_binary
from dagwright.devcluster.cluster import Kwok, LocalCluster
from dagwright.devcluster.nodes import node_manifest
from dagwright.devcluster.processes import Process, free_port
from dagwright.devcluster.redis_server import RedisServer
from dagwright.names import EXECUTIONS, GROUP, POOL_LABEL, POOLS

REPO = Path(__file__).resolve().parents[2]
TOKEN = "demo-token"
GPU_TAINT = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]


def step(number: int, total: int, text: str) -> None:
    label = f"[{number}/{total}]"
    if sys.stdout.isatty():
        label = f"\033[1m{label}\033[0m"
    print(f"{label} {text}", flush=True)


class Demo:
    def __init__(self, workdir: Path, api_port: int, kubectl: list[str]):
        self.workdir = workdir
        self.api_port = api_port
        self.kubectl_argv = kubectl
        self.kubeconfig = Path()

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*self.kubectl_argv, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def python(self, name: str, module: str, env: dict[str, str]) -> Process:
        proc = Process(
            name,
            [sys.executable, "-m", module],
            self.workdir / "logs" / f"{name}.log",
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig), **env},
        )
        proc.start()
        return proc

    def install(self, kwok_tag: str) -> None:
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            f"crd/{EXECUTIONS}.{GROUP}",
            f"crd/{POOLS}.{GROUP}",
        )
        nodes = []
        for pool, extra in (
            ("cpu", {}),
            ("high-memory", {"memory": "1Ti"}),
            ("gpu", {"gpus": 8, "taints": GPU_TAINT}),
        ):
            for i in (1, 2):
                labels = {POOL_LABEL: pool}
                nodes.append(node_manifest(f"{pool}-{i}", tag=kwok_tag, labels=labels, **extra))
        self.kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        self.kubectl("wait", "--for=condition=Ready", "node", "-l", "type=kwok", "--timeout=60s")
        self.kubectl("apply", "-f", str(REPO / "examples" / "pools.yaml"))

    def wait_healthy(self, api: Process, timeout: float = 60) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.api_port}/api/distributed/health"
        while time.monotonic() < deadline:
            api.check()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{url} did not turn healthy within {timeout}s")

    def follow(self, name: str) -> int:
        """The CLI's live view, as a user would run it."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        cli = [sys.executable, "-m", "dagwright.cli", "status", name, "--watch"]
        return subprocess.run(cli, env=env).returncode

    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/console/"

    def hints(self, kubectl_dir: Path | None) -> str:
        path = f"export PATH={kubectl_dir}:$PATH\n  " if kubectl_dir else ""
        return f"""
dagwright is running.

  Web console: {self.console_url()}  (token: {TOKEN})

In another terminal:

  export KUBECONFIG={self.kubeconfig}
  {path}kubectl get dagx,workerpools,nodes
  kubectl describe dagx training-pipeline
  curl -s localhost:{self.api_port}/api/distributed/health
  curl -s localhost:{self.api_port}/api/distributed/workers -H 'Authorization: Bearer {TOKEN}'
  DAGWRIGHT_API_URL=http://127.0.0.1:{self.api_port} DAGWRIGHT_TOKEN={TOKEN} \\
    {REPO}/.venv/bin/dagwright submit {REPO}/examples/training-pipeline.yaml --name again --watch

Logs: {self.workdir / "logs"}. Ctrl-C stops everything.
"""


@contextmanager
def cluster_for_demo(
    mode: str, kubeconfig: Path | None, workdir: Path, stack: ExitStack
) -> Iterator[tuple[Path, str, Path | None]]:
    """(kubeconfig, KWOK tag, directory holding kubectl) for the chosen cluster."""
    if mode == "local":
        local = stack.enter_context(LocalCluster(workdir=workdir / "cluster"))
        assert local.kwok is not None
        yield local.kubeconfig, local.kwok.tag, local.binaries.bin_dir
        return
    if mode == "kind":
        if shutil.which("kind") is None or shutil.which("docker") is None:
            raise SystemExit("--kind needs kind and a running Docker engine")
        name = "dagwright-demo"
        subprocess.run(["kind", "create", "cluster", "--name", name, "--wait", "60s"], check=True)
        stack.callback(subprocess.run, ["kind", "delete", "cluster", "--name", name])
        kubeconfig = workdir / "kind.kubeconfig"
        kubeconfig.write_text(
            subprocess.run(
                ["kind", "get", "kubeconfig", "--name", name],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    assert kubeconfig is not None
    # Simulated nodes for the pools, played by a KWOK controller of ours.
    kwok = Kwok(
        binary=ensure_binary("kwok"),
        kubeconfig=kubeconfig,
        workdir=workdir,
        tag=f"dagwright-demo-{secrets.token_hex(3)}",
        node_lease_seconds=40,
    )
    kwok.start()
    stack.callback(kwok.stop)
    yield kubeconfig, kwok.tag, None


def run(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dagwright.devcluster demo")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--kind", action="store_true", help="create a kind cluster (needs Docker)")
    where.add_argument("--kubeconfig", type=Path, help="use this cluster instead")
    parser.add_argument("--api-port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--exit", action="store_true", help="stop once the example succeeded")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="dagwright-demo-"))
    api_port = args.api_port or free_port()
    mode = "kind" if args.kind else "external" if args.kubeconfig else "local"
    total = 5
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ExitStack() as stack:
        step(1, total, "control-plane binaries (built from Go modules the first time: ~16 min)")
        binaries = ensure_binaries()
        kubectl = [str(binaries.kube), "kubectl"]
        step(2, total, f"cluster ({mode}), KWOK nodes, CRDs and WorkerPools")
        kubeconfig, tag, kubectl_dir = stack.enter_context(
            cluster_for_demo(mode, args.kubeconfig, workdir, stack)
        )
        demo = Demo(workdir, api_port, kubectl)
        demo.kubeconfig = kubeconfig
        demo.install(tag)
        step(3, total, "Redis, the operator and the REST API")
        redis = RedisServer(workdir=workdir / "redis")
        redis.start()
        stack.callback(redis.stop)
        env = {"DAGWRIGHT_REDIS_URL": redis.url, "DAGWRIGHT_HEALTH_PORT": "0"}
        operator = demo.python(
            "operator", "dagwright.operator", env | {"DAGWRIGHT_METRICS_PORT": "0"}
        )
        stack.callback(operator.stop)
        api = demo.python(
            "api",
            "dagwright.api",
            env
            | {
                "DAGWRIGHT_API_HOST": "127.0.0.1",
                "DAGWRIGHT_API_PORT": str(api_port),
                "DAGWRIGHT_API_TOKEN": TOKEN,
            },
        )
        stack.callback(api.stop)
        demo.wait_healthy(api)
        print(f"web console: {demo.console_url()} (token: {TOKEN})", flush=True)
        step(4, total, "kubectl apply -f examples/training-pipeline.yaml")
        demo.kubectl("apply", "-f", str(REPO / "examples" / "training-pipeline.yaml"))
        step(5, total, "following it live (dagwright status training-pipeline --watch)")
        code = demo.follow("training-pipeline")
        if code != 0:
            print(f"the example did not succeed; logs in {workdir / 'logs'}", file=sys.stderr)
            return code
        if args.exit:
            return 0
        print(demo.hints(kubectl_dir), flush=True)
        try:
            while not stop.wait(1.0):
                operator.check()
                api.check()
        except KeyboardInterrupt:
            pass
    return 0
