"""The errors dagwright's own code raises, in one place. Each adapter maps them
onto its medium: the API onto HTTP answers (``api/errors.py``), the CLI onto
exit codes, the operator onto a job's status and an Event. No imports: the
pure core raises them too."""

from __future__ import annotations


class DagwrightError(Exception):
    """Any of the errors below."""


class InvalidDag(DagwrightError, ValueError):
    """A DAG that cannot run: a cycle, an unknown dependency, a job that
    can go nowhere. ``problems``: one sentence each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class ManifestError(DagwrightError, ValueError):
    """A file that is not something dagwright can run; the message says why."""


class FencedOut(DagwrightError):
    """This instance's ownership epoch is stale: another instance owns the
    execution now, and nothing this one writes may land."""


class NameTaken(DagwrightError):
    """A pod's name is held by a pod this execution did not create."""


class AuthError(DagwrightError):
    """A REST caller the API will not serve."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Unauthenticated(AuthError):
    """No credentials, or ones nobody vouches for."""


class Forbidden(AuthError):
    """Known, but RBAC does not allow what was asked."""
