"""The record of finished jobs kept in the DAGExecution's status.

Redis holds the live state and pods hold each attempt's result, but both can
go: Redis can lose its data and pod GC deletes finished pods. A job that
succeeded must never run again because of that, so its outcome is written to
the status (which only the operator, and whoever is granted the status
subresource, may write) before its pod may be collected: Argo's "persist
once" rule, without a finalizer and its extra write on every pod.

Two bits per job, in the spec's job order, base64: 10,000 jobs take 3.4 KB.
The record carries a digest of the job names it was made for; a record that
does not match the spec (edited, or from other jobs) is not used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence

from dagwright.core.state import JobPhase

# The codes, two bits each. Skipped and cancelled jobs share one: both are
# derived again from the spec (shutdown) and the upstream failures.
_OPEN, _SUCCEEDED, _FAILED, _ENDED = 0, 1, 2, 3
# A cached job is recorded as succeeded: its dependents ran on its result.
_CODE = {JobPhase.SUCCEEDED: _SUCCEEDED, JobPhase.CACHED: _SUCCEEDED, JobPhase.FAILED: _FAILED}


def digest(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def encode(names: Sequence[str], phases: Mapping[str, JobPhase]) -> dict[str, str]:
    """The record of ``phases`` (job -> phase) for the jobs ``names``, in that order."""
    packed = bytearray((len(names) + 3) // 4)
    for i, name in enumerate(names):
        phase = phases.get(name)
        if phase is None or not phase.terminal:
            continue
        packed[i >> 2] |= _CODE.get(phase, _ENDED) << ((i & 3) * 2)
    return {"jobs": digest(names), "outcomes": base64.b64encode(bytes(packed)).decode()}


def decode(
    names: Sequence[str], record: Mapping[str, object] | None, cancelled: bool = False
) -> dict[str, JobPhase] | None:
    """Finished jobs -> their phase; None when there is no usable record for
    these jobs. ``cancelled``: the spec asks for a shutdown (an ended job
    that did not fail or succeed was cancelled, else skipped)."""
    if not isinstance(record, Mapping) or record.get("jobs") != digest(names):
        return None
    outcomes = record.get("outcomes")
    if not isinstance(outcomes, str):
        return None
    try:
        packed = base64.b64decode(outcomes, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(packed) != (len(names) + 3) // 4:
        return None
    ended = JobPhase.CANCELLED if cancelled else JobPhase.SKIPPED
    phases = {_SUCCEEDED: JobPhase.SUCCEEDED, _FAILED: JobPhase.FAILED, _ENDED: ended}
    found: dict[str, JobPhase] = {}
    for i, name in enumerate(names):
        code = (packed[i >> 2] >> ((i & 3) * 2)) & 3
        if code != _OPEN:
            found[name] = phases[code]
    return found
