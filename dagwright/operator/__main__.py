"""``python -m dagwright.operator``: run the operator (kopf) in this process."""

from __future__ import annotations

import logging
import sys

import kopf

from dagwright.settings import OperatorSettings


def main() -> int:
    settings = OperatorSettings()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kopf logs every handler call at INFO; ours say what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import dagwright.operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
        if settings.health_port
        else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
