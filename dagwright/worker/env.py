"""What the operator tells a job pod, through environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dagwright.names import PodEnv


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
            execution=env.get(PodEnv.EXECUTION, ""),
            execution_uid=env.get(PodEnv.EXECUTION_UID, ""),
            namespace=env.get(PodEnv.NAMESPACE, ""),
            job=env.get(PodEnv.JOB, ""),
            attempt=int(env.get(PodEnv.ATTEMPT, "1") or 1),
            redis_url=env.get(PodEnv.REDIS_URL) or None,
        )

    @property
    def reports(self) -> bool:
        """Whether heartbeats and checkpoints can reach Redis."""
        return bool(self.redis_url and self.execution_uid and self.job)
