"""The worker image's runtime as a real process against the real Redis: it
heartbeats, forwards SIGTERM with a grace period, and a retried job resumes
from the checkpoint its killed attempt saved."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from dagwright.devcluster.redis_server import RedisServer
from dagwright.store import keys
from tests.conftest import wait_for

SCRIPT = Path(__file__).with_name("fake_train.py")


async def start(
    redis_server: RedisServer, uid: str, attempt: int, config: dict[str, object]
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DAGWRIGHT_REDIS_URL": redis_server.url,
        "DAGWRIGHT_EXECUTION": "pipeline",
        "DAGWRIGHT_EXECUTION_UID": uid,
        "DAGWRIGHT_JOB": "train",
        "DAGWRIGHT_ATTEMPT": str(attempt),
        "DAGWRIGHT_CONFIG": json.dumps(config),
        "DAGWRIGHT_HEARTBEAT_SECONDS": "0.2",
        "DAGWRIGHT_GRACE_SECONDS": "2",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dagwright.worker",
        "--",
        sys.executable,
        str(SCRIPT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def test_killed_job_resumes_from_its_checkpoint(
    redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    uid = secrets.token_hex(8)
    first = await start(redis_server, uid, 1, {"steps": 40})

    async def beating_at_step_5() -> bool:
        beat = await redis.get(keys.heartbeat(uid, "train"))
        ckpt = await redis.get(keys.checkpoint(uid, "train"))
        return bool(beat and ckpt and json.loads(ckpt)["step"] >= 5)

    await wait_for("heartbeats and a checkpoint at step 5", beating_at_step_5, within=20)
    beat = json.loads(str(await redis.get(keys.heartbeat(uid, "train"))))
    assert beat["attempt"] == 1
    assert beat["progress"]["total"] == 40  # report_progress reached the heartbeat

    first.send_signal(signal.SIGTERM)  # as the kubelet does on delete
    sent = time.monotonic()
    out, _ = await asyncio.wait_for(first.communicate(), 10)
    assert time.monotonic() - sent < 2  # stopped by itself, well inside the grace
    assert first.returncode == 143
    text = out.decode()
    assert "stopping after step" in text
    stopped_at = int(text.split("stopping after step ")[1].split()[0])
    saved = json.loads(str(await redis.get(keys.checkpoint(uid, "train"))))
    assert saved["step"] == stopped_at

    second = await start(redis_server, uid, 2, {"steps": 40})
    out, _ = await asyncio.wait_for(second.communicate(), 30)
    text = out.decode()
    assert second.returncode == 0, text
    assert f"attempt 2 starts at step {stopped_at + 1}" in text
    steps_run = [line for line in text.splitlines() if line.startswith("step ")]
    assert len(steps_run) == 40 - (stopped_at + 1)  # nothing redone, nothing skipped
    assert "done" in text


async def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(
    redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    uid = secrets.token_hex(8)
    proc = await start(redis_server, uid, 1, {"steps": 1000, "ignoreSigterm": True})

    async def started() -> bool:
        return bool(await redis.get(keys.checkpoint(uid, "train")))

    await wait_for("the first checkpoint", started, within=20)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    waited = time.monotonic() - sent
    assert 1.5 <= waited <= 8, out.decode()  # the 2 s grace, then SIGKILL
    assert proc.returncode == 128 + signal.SIGKILL
    assert "did not stop within" in out.decode()


async def test_exit_code_is_the_jobs(redis_server: RedisServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dagwright.worker", "--", sys.executable, "-c", "raise SystemExit(7)"
    )
    assert await asyncio.wait_for(proc.wait(), 20) == 7
    missing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dagwright.worker", "no-such-command-xyz"
    )
    assert await asyncio.wait_for(missing.wait(), 20) == 127
