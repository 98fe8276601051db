"""A real Kubernetes control plane on loopback, without Docker.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as plain
processes built from the upstream Go modules (see ``build.py``), with client
certificates and RBAC authorization on, as in a real cluster. KWOK plays the
kubelets: it keeps simulated nodes alive through Leases and moves pods through
their phases according to ``kwok-stages.yaml``.

The same ``Kwok`` fleet also works against any other cluster (a kind cluster,
say): it is only a controller with a kubeconfig.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from dagwright.devcluster import pki as pki_mod
from dagwright.devcluster.build import Binaries, ensure_binaries
from dagwright.devcluster.processes import Process, free_port

log = logging.getLogger(__name__)

STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class ClusterSettings:
    """Knobs of the local control plane. The defaults make node death visible
    in seconds rather than the 40-50 s a production cluster takes."""

    # KWOK renews each node's Lease every quarter of this.
    node_lease_seconds: int = 4
    node_monitor_period: str = "1s"
    node_monitor_grace_period: str = "8s"
    # Default toleration of the not-ready/unreachable taints (what evicts pods).
    taint_toleration_seconds: int = 300
    # The scheduler's and controller-manager's client rate limits; the upstream
    # defaults (50/100 and 20/30) would be the bottleneck of any benchmark.
    client_qps: int = 300
    client_burst: int = 400

    @classmethod
    def upstream(cls) -> ClusterSettings:
        """Node timing at the upstream defaults (a kubelet's 40 s lease,
        kube-controller-manager's 5 s monitor period and 50 s grace): how
        long a production cluster takes to call a dead machine NotReady."""
        return cls(node_lease_seconds=40, node_monitor_period="5s", node_monitor_grace_period="50s")

    @classmethod
    def from_environ(cls) -> ClusterSettings:
        """``DAGWRIGHT_NODE_TIMING=upstream`` for the upstream defaults, else the fast ones."""
        timing = os.environ.get("DAGWRIGHT_NODE_TIMING", "fast")
        if timing not in ("fast", "upstream"):
            raise ValueError(f"DAGWRIGHT_NODE_TIMING is {timing!r}: use fast or upstream")
        return cls.upstream() if timing == "upstream" else cls()


def _wait_until(
    what: str, probe: Callable[[], bool], timeout: float, check: Callable[[], None]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        if probe():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def write_kubeconfig(
    path: Path, server: str, pki: pki_mod.Pki, name: str = "dagwright-local"
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(pki.admin_cert),
                    "client-key": str(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "admin"}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


@dataclass
class Kwok:
    """KWOK controllers against one cluster.

    The main controller manages every node annotated ``kwok.x-k8s.io/node=<tag>``.
    A node that a test wants to kill gets a controller of its own
    (``isolate``); killing that process stops the node's Lease, exactly as a
    dead kubelet would, and nothing finalizes its pods any more.
    """

    binary: Path
    kubeconfig: Path
    workdir: Path
    tag: str
    node_lease_seconds: int
    # A serving certificate and key (for 127.0.0.1): with them, each KWOK
    # controller serves its nodes' kubelet API (container logs) over HTTPS on
    # the port the nodes advertise, which the API server proxies to
    # (`kubectl logs`). Only a local API server can reach 127.0.0.1.
    tls: tuple[Path, Path] | None = None
    main: Process | None = None
    isolated: dict[str, Process] = field(default_factory=dict)

    @property
    def job_log(self) -> Path:
        """What every simulated job container's log shows (followed: lines
        appended to it appear in `kubectl logs -f`)."""
        return self.workdir / "kwok-job.log"

    def _config(self) -> Path:
        config = self.workdir / "kwok-config.yaml"
        if not config.exists():
            if not self.job_log.exists():
                self.job_log.write_text(
                    "".join(cri_log_line(f"simulated job output, line {n}") for n in range(1, 6))
                )
            logs = {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterLogs",
                "metadata": {"name": "job-logs"},
                "spec": {"logs": [{"logsFile": str(self.job_log), "follow": True}]},
            }
            config.write_text(STAGES_FILE.read_text() + "\n---\n" + yaml.safe_dump(logs))
        return config

    def _argv(self, selector_args: list[str]) -> list[str]:
        port = free_port()
        served = [f"--server-address=127.0.0.1:{port}"]
        if self.tls is not None:
            cert, key = self.tls
            served += [
                "--node-ip=127.0.0.1",
                f"--node-port={port}",
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
            ]
        return [
            str(self.binary),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self._config()}",
            *served,
            f"--node-lease-duration-seconds={self.node_lease_seconds}",
            *selector_args,
        ]

    def start(self) -> None:
        self.main = Process(
            "kwok",
            self._argv(
                [
                    "--manage-all-nodes=false",
                    f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}={self.tag}",
                ]
            ),
            self.workdir / "logs" / "kwok.log",
        )
        self.main.start()

    def isolated_tag(self) -> str:
        """The annotation value for nodes that get a controller of their own."""
        return f"{self.tag}-isolated"

    def isolate(self, node_name: str) -> Process:
        """Start a dedicated controller for one node (annotated ``isolated_tag()``)."""
        proc = Process(
            f"kwok-{node_name}",
            self._argv([f"--manage-single-node={node_name}"]),
            self.workdir / "logs" / f"kwok-{node_name}.log",
        )
        proc.start()
        self.isolated[node_name] = proc
        return proc

    def kill_node(self, node_name: str) -> None:
        """Stop the node's kubelet: its Lease expires and the node goes Unknown."""
        self.isolated[node_name].kill()

    def revive_node(self, node_name: str) -> None:
        self.isolated[node_name].start()

    def check(self) -> None:
        if self.main is not None:
            self.main.check()

    def stop(self) -> None:
        for proc in self.isolated.values():
            proc.stop()
        if self.main is not None:
            self.main.stop()


def cri_log_line(text: str) -> str:
    """A line as container runtimes write logs (and the kubelet API serves them)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{now} stdout F {text}\n"


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + KWOK."""

    def __init__(
        self,
        workdir: Path | None = None,
        settings: ClusterSettings | None = None,
        binaries: Binaries | None = None,
    ):
        self.settings = settings or ClusterSettings()
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="dagwright-cluster-"))
        self.binaries = binaries or ensure_binaries()
        self.kubeconfig = self.workdir / "kubeconfig"
        self.pki: pki_mod.Pki | None = None
        self.apiserver_port = 0
        self.processes: dict[str, Process] = {}
        self.kwok: Kwok | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def _log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        self.pki = pki_mod.generate(self.workdir / "pki")
        s = self.settings
        kube = str(self.binaries.kube)

        etcd_port, etcd_peer = free_port(), free_port()
        self.processes["etcd"] = Process(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=node0",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=node0=http://127.0.0.1:{etcd_peer}",
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=8589934592",
                # Durability buys nothing in a throwaway test cluster (envtest does the same).
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self._log("etcd"),
        )
        self.processes["etcd"].start()
        _wait_until(
            "etcd",
            lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"),
            timeout,
            self.processes["etcd"].check,
        )

        self.apiserver_port = free_port()
        p = self.pki
        self.processes["kube-apiserver"] = Process(
            "kube-apiserver",
            [
                kube,
                "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--etcd-prefix=/registry",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={p.serving_cert}",
                f"--tls-private-key-file={p.serving_key}",
                f"--client-ca-file={p.ca_cert}",
                f"--service-account-key-file={p.sa_pub}",
                f"--service-account-signing-key-file={p.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=Node,RBAC",
                f"--default-not-ready-toleration-seconds={s.taint_toleration_seconds}",
                f"--default-unreachable-toleration-seconds={s.taint_toleration_seconds}",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
            ],
            self._log("kube-apiserver"),
        )
        self.processes["kube-apiserver"].start()
        self._wait_apiserver(timeout)
        write_kubeconfig(self.kubeconfig, self.server, p)

        kubeconfig = str(self.kubeconfig)
        delegated = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
        ]
        self.processes["kube-controller-manager"] = Process(
            "kube-controller-manager",
            [
                kube,
                "kube-controller-manager",
                *delegated,
                f"--secure-port={free_port()}",
                f"--root-ca-file={p.ca_cert}",
                f"--service-account-private-key-file={p.sa_key}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                f"--node-monitor-period={s.node_monitor_period}",
                f"--node-monitor-grace-period={s.node_monitor_grace_period}",
                f"--kube-api-qps={s.client_qps}",
                f"--kube-api-burst={s.client_burst}",
                "--concurrent-gc-syncs=10",
            ],
            self._log("kube-controller-manager"),
        )
        scheduler_config = self.workdir / "scheduler.yaml"
        scheduler_config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {
                        "kubeconfig": kubeconfig,
                        "qps": s.client_qps,
                        "burst": s.client_burst,
                    },
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        self.processes["kube-scheduler"] = Process(
            "kube-scheduler",
            [
                kube,
                "kube-scheduler",
                f"--config={scheduler_config}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
            self._log("kube-scheduler"),
        )
        self.processes["kube-controller-manager"].start()
        self.processes["kube-scheduler"].start()

        self.kwok = Kwok(
            binary=self.binaries.kwok,
            kubeconfig=self.kubeconfig,
            workdir=self.workdir,
            tag="dagwright",
            node_lease_seconds=s.node_lease_seconds,
            tls=(p.serving_cert, p.serving_key),
        )
        self.kwok.start()
        # The controller-manager is working once it has made the default
        # namespace's ServiceAccount (pods cannot be created before that).
        _wait_until(
            "kube-controller-manager (default ServiceAccount)",
            lambda: self._get_ok("/api/v1/namespaces/default/serviceaccounts/default"),
            timeout,
            self.check,
        )
        log.info("local cluster ready in %.1fs at %s", time.monotonic() - started, self.server)

    def _get_ok(self, path: str) -> bool:
        return _http_ok(self.server + path, self._ssl_context())

    def _wait_apiserver(self, timeout: float) -> None:
        _wait_until(
            "kube-apiserver /readyz",
            lambda: self._get_ok("/readyz"),
            timeout,
            self.processes["kube-apiserver"].check,
        )

    def check(self) -> None:
        """Raise if any component died (with its log tail)."""
        for proc in self.processes.values():
            proc.check()
        if self.kwok is not None:
            self.kwok.check()

    def stop_etcd(self) -> None:
        """An etcd outage: the API server stays up and answers with errors."""
        self.processes["etcd"].stop(timeout=2.0)

    def start_etcd(self, timeout: float = 60.0) -> None:
        self.processes["etcd"].start()
        self._wait_apiserver(timeout)  # /readyz checks etcd

    def stop_apiserver(self) -> None:
        self.processes["kube-apiserver"].stop()

    def start_apiserver(self, timeout: float = 60.0) -> None:
        self.processes["kube-apiserver"].start()
        self._wait_apiserver(timeout)

    def stop(self) -> None:
        if self.kwok is not None:
            self.kwok.stop()
        for name in ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]:
            if name in self.processes:
                # The cluster is thrown away: kube-apiserver's graceful exit
                # took 10 s here (the whole timeout), for every test cluster
                # and every one of the benchmark's nine.
                self.processes[name].stop(timeout=2.0)
        if self._owns_workdir and not os.environ.get("DAGWRIGHT_KEEP_CLUSTER"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
