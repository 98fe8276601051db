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
    """The report did not arrive (the API is unreachable, or refused it for
    a reason other than the attempt being superseded)."""


class Reports:
    def __init__(self, api_url: str, token_file: str, timeout: float = 5.0):
        self.base = api_url.rstrip("/") + ROUTE
        self.token_file = Path(token_file)
        self.timeout = timeout

    def heartbeat(self, interval_seconds: float, progress: dict[str, Any]) -> bool:
        """True if recorded; False if this attempt has been superseded (stop)."""
        body = {"intervalSeconds": interval_seconds, "progress": progress}
        return self._report("POST", "/heartbeat", body) is not None

    def save_checkpoint(self, path: str, step: int | None) -> bool:
        """True if recorded; False if this attempt has been superseded (stop)."""
        return self._report("POST", "/checkpoint", {"path": path, "step": step}) is not None

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint any attempt of the job saved, or None."""
        try:
            return self._call("GET", "/latest-checkpoint", None)
        except _Status as exc:
            if exc.code == 404:
                return None
            raise ReportError(str(exc)) from exc

    def _report(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self._call(method, path, body)
        except _Status as exc:
            if exc.code == 409:
                return None  # superseded
            raise ReportError(str(exc)) from exc

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            # Read each time: the kubelet rotates it.
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise ReportError(f"no token at {self.token_file}: {exc}") from exc
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
                return answer
        except urllib.error.HTTPError as exc:
            raise _Status(exc.code, _error(exc)) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ReportError(f"{method} {self.base + path}: {exc}") from exc


class _Status(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(f"{code} {message}")
        self.code = code


def _error(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", ""))
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)
