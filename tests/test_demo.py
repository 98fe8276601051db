"""``make demo`` end to end: its own control plane, Redis, operator and API,
and the example pipeline followed to success (then it tears everything down)."""

from __future__ import annotations

import asyncio
import sys

from tests.conftest import REPO


async def test_demo_runs_the_example_to_success() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dagwright.devcluster",
        "demo",
        "--exit",
        "--api-port",
        "0",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode()
    assert proc.returncode == 0, text[-4000:]
    for n in range(1, 6):
        assert f"[{n}/5]" in text
    assert "training-pipeline Succeeded" in text
    assert "all 7 jobs succeeded" in text
    assert "web console: http://127.0.0.1:" in text
