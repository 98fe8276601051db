"""Submitting and watching a pipeline with nothing but httpx: the REST
facade, or the Kubernetes API through a kubeconfig (token, client
certificate or basic credentials; exec credential plugins are not run:
use a token, or the REST facade)."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from dagwright.names import EXECUTIONS, GROUP, VERSION

if TYPE_CHECKING:
    from dagwright.pipeline import Pipeline, Submission


class SubmitError(RuntimeError):
    """The API refused the pipeline; the message is its answer."""


def _answer(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("title")
        problems = body.get("problems")
        if problems:
            return f"{detail}: " + "; ".join(map(str, problems))
        return str(detail or body)
    return str(body)


def patient(call: Callable[[], httpx.Response], tries: int = 10) -> httpx.Response:
    """The response, after waiting out 429s (the API's rate limit) as told."""
    for _ in range(tries - 1):
        response = call()
        if response.status_code != 429:
            return response
        try:
            wait = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        time.sleep(min(max(wait, 0.1), 30.0))
    return call()


class Rest:
    def __init__(self, url: str, token: str | None, verify: bool | str):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, verify=verify)

    def status(self, name: str, namespace: str) -> dict[str, Any]:
        response = patient(
            lambda: self.http.get(f"/execute/{name}", params={"namespace": namespace})
        )
        if response.status_code >= 400:
            raise SubmitError(f"{response.status_code}: {_answer(response)}")
        result: dict[str, Any] = response.json()
        return result


def submit_rest(
    pipeline: Pipeline, manifest: dict[str, Any], url: str, token: str | None, verify: bool | str
) -> Submission:
    from dagwright.pipeline import Submission

    spec = manifest["spec"]
    jobs = []
    for job in spec["jobs"]:
        job = dict(job)
        jobs.append({"id": job.pop("name"), **job})
    body: dict[str, Any] = {"workflowId": pipeline.name, "jobs": jobs}
    if not pipeline.generate_name:
        body["executionId"] = pipeline.name
    if pipeline.namespace:
        body["namespace"] = pipeline.namespace
    for key in ("parallelism", "priority", "defaults"):
        if key in spec:
            body[key] = spec[key]
    client = Rest(url, token, verify)
    response = patient(lambda: client.http.post("/execute", json=body))
    if response.status_code >= 400:
        raise SubmitError(f"{response.status_code}: {_answer(response)}")
    created = response.json()
    return Submission(created["executionId"], created["namespace"], client)


class Kube:
    """The little of a Kubernetes client a pipeline needs."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None):
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        path = path or str(Path.home() / ".kube" / "config")
        config = yaml.safe_load(Path(path).read_text()) or {}
        name = context or config.get("current-context")
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        if name not in contexts:
            raise SubmitError(f"kubeconfig {path} has no context {name!r}")
        ctx = contexts[name]
        cluster = {c["name"]: c["cluster"] for c in config.get("clusters") or []}[ctx["cluster"]]
        user = {u["name"]: u["user"] for u in config.get("users") or []}.get(ctx.get("user"), {})
        self.namespace = ctx.get("namespace") or "default"
        base = Path(path).parent
        self.files = tempfile.TemporaryDirectory(prefix="dagwright-kube-")

        def file_of(data_key: str, file_key: str, source: dict[str, Any]) -> str | None:
            if source.get(data_key):
                target = Path(self.files.name) / data_key
                target.write_bytes(base64.b64decode(source[data_key]))
                return str(target)
            found = source.get(file_key)
            return str(base / found) if found else None

        verify: bool | ssl.SSLContext = not cluster.get("insecure-skip-tls-verify", False)
        ca = file_of("certificate-authority-data", "certificate-authority", cluster)
        headers = {}
        if user.get("exec") or user.get("auth-provider"):
            raise SubmitError(
                "this kubeconfig user runs a credential plugin, which the pipeline SDK does not: "
                "give submit() a token (kubectl create token ...) via api_url=, or a kubeconfig "
                "with a token or client certificate"
            )
        token = user.get("token")
        if user.get("tokenFile"):
            token = Path(user["tokenFile"]).read_text().strip()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        auth = None
        if user.get("username"):
            auth = (user["username"], user.get("password", ""))
        cert = file_of("client-certificate-data", "client-certificate", user)
        key = file_of("client-key-data", "client-key", user)
        if verify and (ca or cert):
            context_ = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
            if cert and key:
                context_.load_cert_chain(cert, key)
            verify = context_
        self.http = httpx.Client(
            base_url=cluster["server"].rstrip("/"), headers=headers, verify=verify, auth=auth
        )

    def path(self, namespace: str, name: str = "") -> str:
        tail = f"/{name}" if name else ""
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{EXECUTIONS}{tail}"

    def status(self, name: str, namespace: str) -> dict[str, Any]:
        response = self.http.get(self.path(namespace, name))
        if response.status_code >= 400:
            raise SubmitError(f"{response.status_code}: {_answer(response)}")
        status: dict[str, Any] = response.json().get("status") or {}
        return status


def submit_kube(
    manifest: dict[str, Any], kubeconfig: str | None, context: str | None, namespace: str | None
) -> Submission:
    from dagwright.pipeline import Submission

    client = Kube(kubeconfig, context)
    ns = namespace or client.namespace
    manifest = {**manifest, "metadata": {**manifest["metadata"], "namespace": ns}}
    response = client.http.post(client.path(ns), json=manifest)
    if response.status_code >= 400:
        raise SubmitError(f"{response.status_code}: {_answer(response)}")
    created = response.json()["metadata"]
    return Submission(created["name"], created["namespace"], client)
