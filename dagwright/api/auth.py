"""Who is calling, and may they? Bearer tokens checked by the Kubernetes API
itself (TokenReview), permissions by SubjectAccessReview, so a ServiceAccount
token or a user's token works exactly as it does with kubectl. An optional
static token (local use) acts as an administrator."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes_asyncio import client

from dagwright.errors import Forbidden, Unauthenticated
from dagwright.names import ATTEMPT_AUDIENCE, GROUP

CACHE_SECONDS = 60.0
# A refused token is remembered for less: one just issued may be retried soon.
FAILED_CACHE_SECONDS = 10.0
# Each cache holds at most this many entries (a flood of distinct tokens must
# not grow the process): expired ones go first, then the oldest.
MAX_CACHED = 10_000


def _remember(cache: dict[Any, tuple[Any, float]], key: Any, value: Any, seconds: float) -> None:
    now = time.monotonic()
    cache.pop(key, None)  # re-inserted last: dicts keep insertion order, oldest first
    cache[key] = (value, now + seconds)
    if len(cache) > MAX_CACHED:
        for stale in [k for k, (_, until) in cache.items() if until <= now]:
            del cache[stale]
        while len(cache) > MAX_CACHED:
            del cache[next(iter(cache))]


@dataclass(frozen=True)
class Caller:
    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    static: bool = False  # the static token: no per-request authorization


def _bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


STATIC_CALLER = Caller(user="dagwright:static-token", static=True)

# Job pods report with a token the kubelet projects into them for this
# audience only (ATTEMPT_AUDIENCE): the Kubernetes API refuses it, and it names its pod.
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"
_SERVICE_ACCOUNT = "system:serviceaccount:"


@dataclass(frozen=True)
class PodCaller:
    """A job pod, as its bound ServiceAccount token names it."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class Attempt:
    """The job attempt a job pod runs (from the pod itself: see routes/attempts.py)."""

    execution: str  # the DAGExecution's name
    execution_uid: str
    job: str
    number: int


@dataclass
class Authenticator:
    kube: client.ApiClient
    static_token: str | None = None
    _identities: dict[str, tuple[Caller | None, float]] = field(default_factory=dict)
    _decisions: dict[tuple[Caller, str, str, str], tuple[bool, float]] = field(default_factory=dict)
    _pods: dict[str, tuple[PodCaller | None, float]] = field(default_factory=dict)

    async def authenticate(self, header: str) -> Caller:
        token = _bearer(header)
        if token is None:
            raise Unauthenticated("missing bearer token")
        found, caller = self._lookup(token)
        if not found:
            caller = await self._review(token)
            seconds = CACHE_SECONDS if caller is not None else FAILED_CACHE_SECONDS
            _remember(self._identities, _digest(token), caller, seconds)
        if caller is None:
            raise Unauthenticated("invalid or expired token")
        return caller

    def known(self, header: str) -> str | None:
        """Who a header's token names, if it is known good (no review made):
        rate limits then go by who it is, not where it comes from."""
        token = _bearer(header)
        if token is None:
            return None
        caller = self._lookup(token)[1]
        if caller is not None:
            return "user:" + caller.user
        pod = self._pods.get(_digest(token))
        if pod and pod[0] is not None and pod[1] > time.monotonic():
            return "pod:" + pod[0].uid
        return None

    async def pod(self, header: str) -> PodCaller:
        """The job pod a projected token (audience ``dagwright``) is bound
        to. The API server vouches for it (TokenReview), and refuses it once
        that pod is deleted: a superseded attempt cannot report."""
        token = _bearer(header)
        if token is None:
            raise Unauthenticated("missing bearer token")
        key = _digest(token)
        cached = self._pods.get(key)
        if cached and cached[1] > time.monotonic():
            pod = cached[0]
        else:
            pod = await self._review_pod(token)
            # Briefly, either way: a pod deleted meanwhile must soon be refused
            # (its writes are fenced by attempt in Redis regardless).
            _remember(self._pods, key, pod, FAILED_CACHE_SECONDS)
        if pod is None:
            raise Unauthenticated(
                "not a job pod's token (audience dagwright, bound to a pod that still exists)"
            )
        return pod

    async def _review_pod(self, token: str) -> PodCaller | None:
        api = client.AuthenticationV1Api(self.kube)
        body = {"spec": {"token": token, "audiences": [ATTEMPT_AUDIENCE]}}
        review = await api.create_token_review(cast(Any, body))
        status = review.status
        if not status or not status.authenticated or not status.user:
            return None
        if ATTEMPT_AUDIENCE not in (status.audiences or []):
            return None
        user, extra = status.user.username or "", status.user.extra or {}
        names, uids = extra.get(_POD_NAME) or [], extra.get(_POD_UID) or []
        if not user.startswith(_SERVICE_ACCOUNT) or len(names) != 1 or len(uids) != 1:
            return None
        namespace = user[len(_SERVICE_ACCOUNT) :].partition(":")[0]
        return PodCaller(namespace=namespace, name=str(names[0]), uid=str(uids[0]))

    def _lookup(self, token: str) -> tuple[bool, Caller | None]:
        """(known, caller) without asking the API server: the static token,
        or a review cached and not expired (caller None: refused)."""
        if self.static_token and secrets.compare_digest(token.encode(), self.static_token.encode()):
            return True, STATIC_CALLER
        cached = self._identities.get(_digest(token))
        if cached and cached[1] > time.monotonic():
            return True, cached[0]
        return False, None

    async def _review(self, token: str) -> Caller | None:
        api = client.AuthenticationV1Api(self.kube)
        review = await api.create_token_review(cast(Any, {"spec": {"token": token}}))
        status = review.status
        if not status or not status.authenticated or not status.user:
            return None
        user = status.user
        return Caller(user=user.username, groups=tuple(user.groups or ()), uid=user.uid or "")

    async def authorize(
        self,
        caller: Caller,
        verb: str,
        resource: str,
        namespace: str = "",
        group: str = GROUP,
        subresource: str = "",
    ) -> None:
        if caller.static:
            return
        key = (caller, verb, f"{resource}/{subresource}.{group}", namespace)
        cached = self._decisions.get(key)
        if cached and cached[1] > time.monotonic():
            allowed = cached[0]
        else:
            api = client.AuthorizationV1Api(self.kube)
            attributes = {"group": group, "resource": resource, "verb": verb}
            if subresource:
                attributes["subresource"] = subresource
            if namespace:
                attributes["namespace"] = namespace
            body = {
                "spec": {
                    "user": caller.user,
                    "groups": list(caller.groups),
                    "uid": caller.uid,
                    "resourceAttributes": attributes,
                }
            }
            review = await api.create_subject_access_review(cast(Any, body))
            allowed = bool(review.status and review.status.allowed)
            _remember(self._decisions, key, allowed, CACHE_SECONDS)
        if not allowed:
            where = f" in namespace {namespace}" if namespace else ""
            what = f"{resource}/{subresource}" if subresource else resource
            raise Forbidden(
                f"{caller.user} may not {verb} {what}{'.' + group if group else ''}{where}"
            )
