"""The one version of dagwright: the package's (pyproject.toml). The CLI's
``--version``, the API's health body and OpenAPI document, the operator's
``dagwright_build_info`` and the default worker image's tag all read it; the
chart's appVersion is checked against it (tests/test_version.py)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("dagwright")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0.0.0+unknown"

WORKER_IMAGE = f"ghcr.io/dagwright/worker:{VERSION}"
