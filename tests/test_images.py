"""The Dockerfiles (no Docker engine here, so: lint, inputs, and the runtime's
import footprint, which is what the slim worker image relies on)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILES = [REPO / "Dockerfile", REPO / "worker-image" / "Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(REPO / ".venv" / "bin" / "hadolint")
    done = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_everything_the_dockerfile_copies_exists(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    sources = [
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE)
        for src in line.split()[:-1]
    ]
    assert sources, "no COPY from the build context"
    for src in sources:
        assert (REPO / src).exists(), f"{dockerfile} copies {src}, which does not exist"


def test_worker_runtime_needs_only_the_standard_library() -> None:
    # The worker image installs dagwright without its dependencies; job pods
    # hold no Redis credentials (they report through the REST API).
    probe = (
        "import sys, dagwright.worker, dagwright.worker.runtime, dagwright.worker.agent;"
        "heavy = {'pydantic', 'kopf', 'kubernetes_asyncio', 'fastapi', 'yaml', 'httpx', 'redis'};"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
