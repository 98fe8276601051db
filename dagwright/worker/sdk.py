"""The SDK for training code running under the dagwright job runtime.

Every call works outside dagwright too (no API, no environment): reports are
then dropped and ``latest_checkpoint`` returns what the environment says, so
the same script runs on a laptop."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from dagwright.names import MAX_OUTPUT_BYTES, PodEnv
from dagwright.worker.env import JobEnv
from dagwright.worker.report import ReportError, Reports

log = logging.getLogger("dagwright.worker")
_stop_requested = False


@dataclass(frozen=True)
class Checkpoint:
    path: str
    step: int | None


@cache
def _env() -> JobEnv:
    return JobEnv.from_environ()


@cache
def _reports() -> Reports | None:
    env = _env()
    if not env.reports or env.api_url is None:
        return None
    return Reports(env.api_url, env.token_file)


def config() -> dict[str, Any]:
    """The job's ``config`` from the manifest (``{}`` when it has none)."""
    raw = os.environ.get(PodEnv.CONFIG)
    return dict(json.loads(raw)) if raw else {}


def attempt() -> int:
    """1 on the first run of the job, 2 on its first retry, and so on."""
    return _env().attempt


def latest_checkpoint() -> Checkpoint | None:
    """The newest checkpoint any earlier attempt saved, or None."""
    reports = _reports()
    if reports is not None:
        try:
            data = reports.latest_checkpoint()
        except ReportError as exc:
            log.warning("cannot ask for the latest checkpoint: %s", exc)
        else:
            if data:
                return Checkpoint(str(data["path"]), data.get("step"))
    # What the operator knew when it created this pod.
    path = os.environ.get(PodEnv.CHECKPOINT_PATH)
    if path:
        step = os.environ.get(PodEnv.CHECKPOINT_STEP)
        return Checkpoint(path, int(step) if step else None)
    return None


def save_checkpoint(path: str, step: int | None = None) -> bool:
    """Record that ``path`` (written by you, to durable storage) holds the
    state after ``step``; a retry or a failover resumes from it.

    False if it was not recorded: outside dagwright, or because a newer
    attempt of the job has started (this one's node was given up for lost).
    Then ``stopping()`` turns true: finish up and exit, nothing more of this
    attempt counts. Raises ``ReportError`` if dagwright could not be reached."""
    global _stop_requested
    reports = _reports()
    if reports is None:
        return False
    if reports.save_checkpoint(path, step):
        return True
    log.warning("checkpoint %s not recorded: a newer attempt of the job runs", path)
    _stop_requested = True
    return False


# Outputs set outside dagwright (no $DAGWRIGHT_OUTPUTS_FILE): kept here, for tests.
_outputs: dict[str, Any] = {}


def set_output(name: str, value: Any) -> None:
    """Record the output ``name`` (declared in the job's ``outputs``) as
    ``value``: a string, number, boolean, null, or a small JSON list or
    object (all of a job's outputs together: 4 KiB). Only the attempt that
    succeeds counts; later jobs read it as ``{{jobs.JOB.outputs.NAME}}``.

    Written as one JSON object to ``$DAGWRIGHT_OUTPUTS_FILE`` (the pod's
    termination message: the kubelet copies it into the pod's status when
    the container ends). Raises ValueError for a value JSON cannot carry or
    outputs over the size limit."""
    path = os.environ.get(PodEnv.OUTPUTS_FILE)
    current = dict(_outputs)
    if path and os.path.exists(path):
        with open(path) as existing:
            text = existing.read()
        if text.strip():
            try:
                loaded = json.loads(text)
            except ValueError:
                loaded = {}
            if isinstance(loaded, dict):
                current = loaded
    current[name] = value
    text = json.dumps(current, separators=(",", ":"), allow_nan=False)
    if len(text.encode()) > MAX_OUTPUT_BYTES:
        raise ValueError(
            f"outputs take {len(text.encode())} bytes, more than {MAX_OUTPUT_BYTES}: "
            "keep large artifacts in your storage and output their URIs"
        )
    _outputs[name] = value
    if path:
        # In place: the termination message file is a bind mount, not replaceable.
        with open(path, "w") as out:
            out.write(text)
    else:
        log.info("output %s = %s (outside dagwright: not recorded)", name, text)


def outputs() -> dict[str, Any]:
    """The outputs set so far by this process."""
    return dict(_outputs)


def report_progress(done: float, total: float | None = None, message: str = "") -> None:
    """Progress for people: written to the log and, with the next heartbeat, to dagwright."""
    shown = f"{done}/{total}" if total else f"{done}"
    log.info("progress %s %s", shown, message)
    path = os.environ.get(PodEnv.PROGRESS_FILE)
    if path:
        # The runtime (the parent process) reads it into its heartbeats.
        tmp = f"{path}.tmp"
        with open(tmp, "w") as out:
            json.dump({"done": done, "total": total, "message": message, "at": time.time()}, out)
        os.replace(tmp, path)


def _on_sigterm(signum: int, frame: object) -> None:
    global _stop_requested
    _stop_requested = True


def stopping() -> bool:
    """True once the runtime forwarded SIGTERM, or this attempt was
    superseded by a newer one: checkpoint now (if still current) and exit."""
    return _stop_requested


# Installed on import (when nothing else handles SIGTERM): training code polls
# ``stopping()`` instead of dying mid-step.
if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    # Imported outside the main thread: leave signals alone.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _on_sigterm)
