"""One version: the package's, everywhere it is shown or used."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from dagwright.api.models import Health
from dagwright.settings import OperatorSettings
from dagwright.version import VERSION, WORKER_IMAGE

REPO = Path(__file__).resolve().parents[1]


def test_the_package_version_is_the_one_version() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert declared == VERSION
    chart = yaml.safe_load((REPO / "charts" / "dagwright" / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION
    assert OperatorSettings().worker_image == WORKER_IMAGE == f"ghcr.io/dagwright/worker:{VERSION}"
    assert Health(status="ok", redis=True, kubernetes=True, operators=1, workers={}).version == (
        VERSION
    )
    shown = subprocess.run(
        [sys.executable, "-m", "dagwright.cli", "--version"], capture_output=True, text=True
    )
    assert shown.stdout.strip() == f"dagwright {VERSION}"


def test_no_version_literal_is_spread_over_the_code() -> None:
    literal = re.compile(re.escape(VERSION))
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "dagwright").rglob("*.py")
        if literal.search(path.read_text())
    ]
    assert offenders == []


def test_ci_and_the_images_install_the_pinned_dependency_set() -> None:
    pins = (REPO / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("kopf==") for line in pins)
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
    assert "--constraint constraints.txt" in (REPO / "Dockerfile").read_text()
