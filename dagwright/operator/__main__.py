"""``python -m dagwright.operator``: run the operator (kopf) in this process."""

from __future__ import annotations

import json
import logging
import sys

import kopf
import prometheus_client

from dagwright.operator import logfields
from dagwright.settings import OperatorSettings


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **logfields.fields(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def main() -> int:
    settings = OperatorSettings()
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else text)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # kopf logs every handler call at INFO; ours say what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    import dagwright.operator.handlers  # noqa: F401  (registers the handlers)

    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
