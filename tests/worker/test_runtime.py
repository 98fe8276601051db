"""The worker image's runtime as a real process, reporting through the real
REST API with a token bound to its attempt's pod, as the kubelet would
project it: it heartbeats, forwards SIGTERM with a grace period, a retried
job resumes from the checkpoint its killed attempt saved, and an attempt
that has been superseded cannot report."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubernetes_asyncio import client

from dagwright.store import keys
from tests.conftest import ApiProcess, Pools, wait_for
from tests.helpers import create_execution, dag, running_pod

SCRIPT = Path(__file__).with_name("fake_train.py")


async def bound_token(
    core: client.CoreV1Api, namespace: str, pod: Any, audience: str = "dagwright"
) -> str:
    """A ServiceAccount token for ``audience``, bound to ``pod``."""
    ref = {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid}
    body = {"spec": {"audiences": [audience], "expirationSeconds": 600, "boundObjectRef": ref}}
    answer = await core.create_namespaced_service_account_token("default", namespace, body)
    return str(answer.status.token)


async def pod_token(core: client.CoreV1Api, namespace: str, key: str) -> tuple[str, Any]:
    """What the kubelet projects into the pod of attempt ``key``: a token for
    audience dagwright, bound to that pod."""
    pod = await wait_for(f"{key} running", lambda: running_pod(core, namespace, key), within=60)
    return await bound_token(core, namespace, pod), pod


async def spawn(env: dict[str, str]) -> asyncio.subprocess.Process:
    """The worker runtime running fake_train.py, as a job pod's entrypoint."""
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


async def start(
    api_server: ApiProcess, token: str, tmp: Path, uid: str, attempt: int, config: dict[str, Any]
) -> asyncio.subprocess.Process:
    token_file = tmp / f"token-{attempt}"
    token_file.write_text(token)
    env = {
        **os.environ,
        "DAGWRIGHT_API_URL": api_server.url,
        "DAGWRIGHT_TOKEN_FILE": str(token_file),
        "DAGWRIGHT_EXECUTION": "pipeline",
        "DAGWRIGHT_EXECUTION_UID": uid,
        "DAGWRIGHT_JOB": "train",
        "DAGWRIGHT_ATTEMPT": str(attempt),
        "DAGWRIGHT_CONFIG": json.dumps(config),
        "DAGWRIGHT_HEARTBEAT_SECONDS": "0.2",
        "DAGWRIGHT_GRACE_SECONDS": "2",
    }
    return await spawn(env)


@pytest.mark.usefixtures("operator")
async def test_killed_job_resumes_from_its_checkpoint_and_the_old_attempt_cannot_report(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    api_server: ApiProcess,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    await pools.create(["cpu"])
    job = {"name": "train", "retries": 2, "backoff": {"initial": "100ms"}}
    obj = await create_execution(kube, namespace, "pipeline", dag([job], duration="600s"))
    uid = obj["metadata"]["uid"]
    token, pod = await pod_token(core, namespace, "pipeline-train-1")
    first = await start(api_server, token, tmp_path, uid, 1, {"steps": 40})

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
    assert (saved["step"], saved["attempt"]) == (stopped_at, 1)

    # The pod goes (a failed attempt: retried); attempt 2 resumes where 1 stopped.
    await core.delete_namespaced_pod(pod.metadata.name, namespace)
    token2, _ = await pod_token(core, namespace, "pipeline-train-2")
    second = await start(api_server, token2, tmp_path, uid, 2, {"steps": 40})
    out, _ = await asyncio.wait_for(second.communicate(), 30)
    text = out.decode()
    assert second.returncode == 0, text
    assert f"attempt 2 starts at step {stopped_at + 1}" in text
    steps_run = [line for line in text.splitlines() if line.startswith("step ")]
    assert len(steps_run) == 40 - (stopped_at + 1)  # nothing redone, nothing skipped
    assert "done" in text
    final = json.loads(str(await redis.get(keys.checkpoint(uid, "train"))))
    assert (final["step"], final["attempt"]) == (39, 2)

    # Attempt 1, were it still running somewhere, can no longer report: its
    # token died with its pod (and its reports are fenced by attempt anyway).
    late = await start(api_server, token, tmp_path, uid, 1, {"steps": 45})
    out, _ = await asyncio.wait_for(late.communicate(), 30)
    assert json.loads(str(await redis.get(keys.checkpoint(uid, "train"))))["attempt"] == 2
    assert "superseded" in out.decode() or "not recorded" in out.decode() or "401" in out.decode()


async def test_a_job_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    # Outside dagwright (no API): the runtime still forwards and enforces.
    env = {**os.environ, "DAGWRIGHT_CONFIG": json.dumps({"steps": 1000, "ignoreSigterm": True})}
    env |= {"DAGWRIGHT_GRACE_SECONDS": "2"}
    proc = await spawn(env)
    assert proc.stdout is not None
    line = b""
    while b"starts at step 0" not in line:  # the runtime logs a line before it
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, "the job never started"
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    waited = time.monotonic() - sent
    assert 1.5 <= waited <= 8, out.decode()  # the 2 s grace, then SIGKILL
    assert proc.returncode == 128 + signal.SIGKILL
    assert "did not stop within" in out.decode()


async def test_exit_code_is_the_jobs() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dagwright.worker", "--", sys.executable, "-c", "raise SystemExit(7)"
    )
    assert await asyncio.wait_for(proc.wait(), 20) == 7
    missing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dagwright.worker", "no-such-command-xyz"
    )
    assert await asyncio.wait_for(missing.wait(), 20) == 127
