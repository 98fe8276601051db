"""``python -m dagwright.devcluster {build,up,demo}``: build the binaries, run a
local control plane in the foreground until Ctrl-C, or run the whole demo."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from dagwright.devcluster.build import ensure_binaries
from dagwright.devcluster.cluster import LocalCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dagwright.devcluster")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or find cached) control-plane binaries")
    up = sub.add_parser("up", help="run a local control plane until interrupted")
    up.add_argument("--workdir", type=Path, help="keep state and logs here (default: a temp dir)")
    sub.add_parser("demo", help="cluster, Redis, operator, API and a sample DAG (make demo)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from dagwright.devcluster.demo import run

        return run(argv[1:])
    args = parser.parse_args(argv)

    if args.command == "build":
        print(ensure_binaries().bin_dir)
        return 0

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with LocalCluster(workdir=args.workdir) as cluster:
        print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
        print(f"logs: {cluster.workdir / 'logs'}   (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            while not stop.wait(1.0):
                cluster.check()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
