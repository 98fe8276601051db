"""A job attempt's one channel to dagwright: the REST API, authenticated with
the token the kubelet projects into the pod (audience ``dagwright``). The
pod holds nothing that could touch another execution's state, or its own
beyond these reports. Standard library only: the worker image stays small."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROUTE = "/api/distributed/attempts"


class ReportError(Exception):
    """The call did not succeed: dagwright was unreachable (``status`` None)
    or answered with an error ``status``."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def call(
    method: str, url: str, token_file: Path, body: dict[str, Any] | None, timeout: float = 5.0
) -> dict[str, Any]:
    """One JSON call to the REST API with the bearer token in ``token_file``
    (read each time: the kubelet rotates it)."""
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ReportError(f"no token at {token_file}: {exc}") from exc
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            answer: dict[str, Any] = json.loads(raw) if raw else {}
            return answer
    except urllib.error.HTTPError as exc:
        raise ReportError(f"{method} {url}: {exc.code} {_error(exc)}", exc.code) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ReportError(f"{method} {url}: {exc}") from exc


def _error(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", ""))
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)


class Reports:
    """What the runtime and the SDK send for the attempt their pod runs."""

    def __init__(self, api_url: str, token_file: str, timeout: float = 5.0):
        self.base = api_url.rstrip("/") + ROUTE
        self.token_file = Path(token_file)
        self.timeout = timeout

    def heartbeat(self, interval_seconds: float, progress: dict[str, Any]) -> bool:
        """True if recorded; False if this attempt has been superseded (stop)."""
        body = {"intervalSeconds": interval_seconds, "progress": progress}
        return self._report("/heartbeat", body)

    def save_checkpoint(self, path: str, step: int | None) -> bool:
        """True if recorded; False if this attempt has been superseded (stop)."""
        return self._report("/checkpoint", {"path": path, "step": step})

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint any attempt of the job saved, or None."""
        try:
            return call(
                "GET", f"{self.base}/latest-checkpoint", self.token_file, None, self.timeout
            )
        except ReportError as exc:
            if exc.status == 404:
                return None
            raise

    def _report(self, path: str, body: dict[str, Any]) -> bool:
        try:
            call("POST", self.base + path, self.token_file, body, self.timeout)
        except ReportError as exc:
            if exc.status == 409:
                return False  # superseded
            raise
        return True
