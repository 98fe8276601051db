"""The ``dagwright`` command: the CLI, or a clear word when the install is
the slim one (``pip install dagwright``, for pipeline authors) and the CLI's
cluster dependencies are missing."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from dagwright.cli import main as cli
    except ModuleNotFoundError as exc:
        sys.exit(
            f"dagwright: the command line needs the cluster extra ({exc.name} is not installed): "
            "pip install 'dagwright[cluster]'. Pipelines run locally without it: "
            "Pipeline.run_local() in dagwright.pipeline."
        )
    cli()
