"""What the operator tells a job pod, through environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class JobEnv:
    execution: str
    execution_uid: str
    namespace: str
    job: str
    attempt: int
    redis_url: str | None

    @classmethod
    def from_environ(cls) -> JobEnv:
        env = os.environ
        return cls(
            execution=env.get("DAGWRIGHT_EXECUTION", ""),
            execution_uid=env.get("DAGWRIGHT_EXECUTION_UID", ""),
            namespace=env.get("DAGWRIGHT_NAMESPACE", ""),
            job=env.get("DAGWRIGHT_JOB", ""),
            attempt=int(env.get("DAGWRIGHT_ATTEMPT", "1") or 1),
            redis_url=env.get("DAGWRIGHT_REDIS_URL") or None,
        )

    @property
    def reports(self) -> bool:
        """Whether heartbeats and checkpoints can reach Redis."""
        return bool(self.redis_url and self.execution_uid and self.job)
