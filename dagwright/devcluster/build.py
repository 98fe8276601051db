"""Build the control-plane binaries from upstream Go modules, once, into a cache.

Nothing here downloads a release binary: every component is compiled from the
Go module proxy with the machine's Go (``GOTOOLCHAIN=local``, so a newer Go
requirement fails loudly instead of fetching a toolchain). Each binary lives in
``<cache>/bin/<name>-<key>/`` where the key hashes the pinned version, the Go
version and the sources of our small wrapper modules, so a version bump builds
anew and an unchanged tree reuses the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"

REPO_ROOT = Path(__file__).resolve().parents[2]
GO_MODULES = REPO_ROOT / "hack" / "cluster"


def cache_dir() -> Path:
    """Where built binaries live: outside the repo, shared by every checkout."""
    explicit = os.environ.get("DAGWRIGHT_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dagwright"


@dataclass(frozen=True)
class Binaries:
    kube: Path  # multi-call: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
    etcd: Path
    kwok: Path
    helm: Path

    @property
    def bin_dir(self) -> Path:
        """A directory of symlinks with the upstream names, to put on PATH."""
        return self.kube.parent.parent / "path"


@dataclass(frozen=True)
class _Target:
    name: str
    version: str
    # Either a local wrapper module (built with `go build`) or a package@version
    # installed with `go install` (for modules without replace directives).
    module_dir: Path | None = None
    package: str | None = None
    ldflags: str = "-s -w"


def _targets() -> list[_Target]:
    minor = KUBERNETES_VERSION.split(".")[1]
    kube_ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    return [
        _Target("kube", KUBERNETES_VERSION, module_dir=GO_MODULES / "kube", ldflags=kube_ldflags),
        _Target("etcd", ETCD_VERSION, module_dir=GO_MODULES / "etcd"),
        _Target(
            "kwok",
            KWOK_VERSION,
            package=f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
        ),
        _Target(
            "helm",
            HELM_VERSION,
            package=f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
            ldflags=f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        ),
    ]


def _go_version() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _key(target: _Target, go_version: str) -> str:
    digest = hashlib.sha256(f"{target.version}\n{go_version}\n{target.ldflags}\n".encode())
    if target.module_dir is not None:
        for path in sorted(target.module_dir.iterdir()):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{target.version}-{digest.hexdigest()[:12]}"


@contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Serialise builds across processes (two pytest runs, a demo and a test)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false")
    return env


def _build(target: _Target, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    print(
        f"dagwright: building {target.name} {target.version} (cached afterwards)...",
        file=sys.stderr,
        flush=True,
    )
    if target.module_dir is not None:
        cmd = [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            target.ldflags,
            "-o",
            str(tmp / target.name),
            ".",
        ]
        subprocess.run(cmd, check=True, cwd=target.module_dir, env=_go_env())
    else:
        assert target.package is not None
        env = _go_env() | {"GOBIN": str(tmp)}
        cmd = ["go", "install", "-trimpath", "-ldflags", target.ldflags, target.package]
        subprocess.run(cmd, check=True, env=env)
    tmp.rename(dest)
    elapsed = time.monotonic() - started
    print(f"dagwright: built {target.name} in {elapsed:.0f}s", file=sys.stderr, flush=True)


def _ensure(names: set[str]) -> dict[str, Path]:
    root = cache_dir() / "bin"
    go_version = _go_version()
    paths: dict[str, Path] = {}
    with _build_lock(root):
        for target in _targets():
            if target.name not in names:
                continue
            dest = root / f"{target.name}-{_key(target, go_version)}"
            if not (dest / target.name).exists():
                _build(target, dest)
            paths[target.name] = dest / target.name
    return paths


def ensure_binary(name: str) -> Path:
    """One component (e.g. only ``kwok`` when the cluster comes from KUBECONFIG)."""
    return _ensure({name})[name]


def ensure_binaries() -> Binaries:
    """Return every built binary, compiling the ones missing from the cache."""
    binaries = Binaries(**_ensure({t.name for t in _targets()}))
    _link_path_dir(binaries)
    return binaries


def _link_path_dir(binaries: Binaries) -> None:
    path_dir = binaries.bin_dir
    path_dir.mkdir(parents=True, exist_ok=True)
    links = {
        "kube-apiserver": binaries.kube,
        "kube-controller-manager": binaries.kube,
        "kube-scheduler": binaries.kube,
        "kubectl": binaries.kube,
        "etcd": binaries.etcd,
        "kwok": binaries.kwok,
        "helm": binaries.helm,
    }
    for name, target in links.items():
        link = path_dir / name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        tmp = path_dir / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)


if __name__ == "__main__":
    built = ensure_binaries()
    print(built.bin_dir)
