"""How every dagwright process talks to the Kubernetes API: one way to get a
client, one way to send a call whose answer we do not decode, one merge patch,
one way to read the API server's error."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable
from typing import Any, Literal, cast, overload

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.names import GROUP, VERSION

_PROXY_VARIABLES = [
    name
    for lower in ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy")
    for name in (lower, lower.upper())
]


async def new_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A client for the first of: ``kubeconfig`` (a path), $KUBECONFIG, the
    in-cluster ServiceAccount, ~/.kube/config. (controller-runtime's order,
    so the operator, the API and the CLI agree on which cluster they mean.)"""
    if not (kubeconfig or os.environ.get("KUBECONFIG")) and os.environ.get(
        "KUBERNETES_SERVICE_HOST"
    ):
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return _without_proxy_lookups(client.ApiClient())
        except config.ConfigException:
            pass  # in a pod without a ServiceAccount token: try the file
    # None: the client reads $KUBECONFIG, else ~/.kube/config.
    api = await config.new_client_from_config(config_file=kubeconfig)
    return _without_proxy_lookups(api)


def _without_proxy_lookups(api: client.ApiClient) -> client.ApiClient:
    if not any(os.environ.get(v) for v in _PROXY_VARIABLES):
        # The client's aiohttp session trusts the environment: for every
        # request it looks for a proxy and reads ~/.netrc in a worker thread
        # (a tenth of the operator's CPU when creating pods). With no proxy
        # configured there is nothing to find.
        api.rest_client.pool_manager._trust_env = False
    return api


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    """What the client does for decoded calls, for a raw response (a call made
    with ``_preload_content=False``): an ApiException with the server's body."""
    if not 200 <= response.status <= 299:
        exc = ApiException(status=response.status, reason=response.reason)
        exc.body = await response.read()  # the client keeps bodies as read
        raise exc


async def send(call: Awaitable[Any]) -> bytes:
    """Await a raw call (``_preload_content=False``): raise on an error
    status, release the connection (the client does neither then) and
    return the body, undecoded."""
    response = await call
    try:
        await raise_for_status(response)
        # aiohttp closes, rather than pools, a connection released before its
        # body was read to the end: the next call would pay a TLS handshake
        # (about a third of all connections when creating pods at full speed).
        body: bytes = await response.read()
        return body
    finally:
        response.release()


def error_message(exc: ApiException) -> str:
    """The API server's own sentence for a refused call (from its Status body)."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, TypeError, AttributeError):
        return f"{exc.status} {exc.reason}"


Subresource = Literal["", "status", "scale"]


@overload
async def merge_patch(
    custom: client.CustomObjectsApi,
    plural: str,
    name: str,
    body: dict[str, Any],
    *,
    namespace: str | None = ...,
    subresource: Subresource = ...,
    group: str = ...,
    version: str = ...,
    decode: Literal[True],
) -> dict[str, Any]: ...


@overload
async def merge_patch(
    custom: client.CustomObjectsApi,
    plural: str,
    name: str,
    body: dict[str, Any],
    *,
    namespace: str | None = ...,
    subresource: Subresource = ...,
    group: str = ...,
    version: str = ...,
    decode: Literal[False] = ...,
) -> None: ...


async def merge_patch(
    custom: client.CustomObjectsApi,
    plural: str,
    name: str,
    body: dict[str, Any],
    *,
    namespace: str | None = None,
    subresource: Subresource = "",
    group: str = GROUP,
    version: str = VERSION,
    decode: bool = False,
) -> dict[str, Any] | None:
    """A JSON merge patch of a custom object (custom objects take no
    strategic merge; the stubs lack ``_content_type``), or of its status or
    scale subresource; namespaced when ``namespace`` is given. The patched
    object if ``decode`` (a 10,000-job execution is megabytes: the operator
    does not ask)."""
    suffix = f"_{subresource}" if subresource else ""
    if namespace:
        call = getattr(custom, f"patch_namespaced_custom_object{suffix}")
        where: tuple[str, ...] = (group, version, namespace, plural, name)
    else:
        call = getattr(custom, f"patch_cluster_custom_object{suffix}")
        where = (group, version, plural, name)
    raw = await send(
        cast(Any, call)(
            *where,
            body,
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
    )
    if not decode:
        return None
    patched: dict[str, Any] = json.loads(raw)
    return patched
