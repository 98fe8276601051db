"""What the operator tells a job pod, through environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dagwright.names import PodEnv

# Where the job pod's projected token (audience "dagwright") is mounted.
DEFAULT_TOKEN_FILE = "/var/run/secrets/dagwright/token"


@dataclass(frozen=True)
class JobEnv:
    execution: str
    execution_uid: str
    namespace: str
    job: str
    attempt: int
    api_url: str | None
    token_file: str

    @classmethod
    def from_environ(cls) -> JobEnv:
        env = os.environ
        return cls(
            execution=env.get(PodEnv.EXECUTION, ""),
            execution_uid=env.get(PodEnv.EXECUTION_UID, ""),
            namespace=env.get(PodEnv.NAMESPACE, ""),
            job=env.get(PodEnv.JOB, ""),
            attempt=int(env.get(PodEnv.ATTEMPT, "1") or 1),
            api_url=env.get(PodEnv.API_URL) or None,
            token_file=env.get(PodEnv.TOKEN_FILE) or DEFAULT_TOKEN_FILE,
        )

    @property
    def reports(self) -> bool:
        """Whether heartbeats and checkpoints can reach dagwright."""
        return bool(self.api_url and self.job and Path(self.token_file).is_file())
