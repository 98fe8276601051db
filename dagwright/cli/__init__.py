"""``dagwright``: submit and follow executions, pause the queue, list workers.

Executions are DAGExecution objects, so those commands speak the Kubernetes
API (your kubeconfig, your RBAC); queue and worker commands read Redis-backed
state through the REST API (``--api-url``, ``$DAGWRIGHT_TOKEN``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from rich.console import Console
from rich.table import Table

from dagwright.cli.manifests import load_execution
from dagwright.cli.view import follow, job_table, summary
from dagwright.core.graph import build_dag
from dagwright.core.spec import DAGExecutionSpec
from dagwright.core.state import ENDED_PHASES, ExecutionPhase, JobPhase
from dagwright.errors import ManifestError
from dagwright.kube.client import error_message, merge_patch, new_api_client
from dagwright.local import LocalRun
from dagwright.names import EXECUTIONS, GROUP
from dagwright.names import VERSION as API_VERSION
from dagwright.version import VERSION

T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4
_DONE_TO = {"suspend": "suspended", "resume": "resumed", "cancel": "cancelled"}


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _kube(args: argparse.Namespace, call: Callable[[client.CustomObjectsApi], Awaitable[T]]) -> T:
    """Run one Kubernetes call with a client from the kubeconfig (or in-cluster)."""

    async def run() -> T:
        api = await new_api_client(args.kubeconfig)
        async with api:
            return await call(client.CustomObjectsApi(api))

    try:
        return asyncio.run(run())
    except ApiException as exc:
        raise CliError(error_message(exc), EXIT_FAILED) from exc
    except (OSError, config.ConfigException) as exc:
        raise CliError(f"cannot reach the Kubernetes API: {exc}", EXIT_UNREACHABLE) from exc


def _get(args: argparse.Namespace, name: str) -> dict[str, Any]:
    async def call(objects: client.CustomObjectsApi) -> dict[str, Any]:
        obj: dict[str, Any] = await objects.get_namespaced_custom_object(
            GROUP, API_VERSION, args.namespace, EXECUTIONS, name
        )
        return obj

    return _kube(args, call)


def _watch(args: argparse.Namespace, name: str, console: Console) -> int:
    phase = follow(name, lambda: _get(args, name), time.sleep, console)
    return EXIT_OK if phase == "Succeeded" else EXIT_FAILED


# --- commands ---------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace, console: Console) -> int:
    try:
        manifest = load_execution(Path(args.file))
    except ManifestError as exc:
        raise CliError(str(exc)) from exc
    if args.name:
        manifest["metadata"]["name"] = args.name
        manifest["metadata"].pop("generateName", None)

    async def call(objects: client.CustomObjectsApi) -> Any:
        return await objects.create_namespaced_custom_object(
            GROUP, API_VERSION, args.namespace, EXECUTIONS, manifest
        )

    name = _kube(args, call)["metadata"]["name"]  # generateName: the API server's choice
    console.print(f"dagexecution/{name} created in {args.namespace}")
    return _watch(args, name, console) if args.watch else EXIT_OK


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    if not args.local:
        args.watch, args.name = True, None
        return cmd_submit(args, console)
    try:
        manifest = load_execution(Path(args.file))
    except ManifestError as exc:
        raise CliError(str(exc)) from exc
    spec = DAGExecutionSpec.model_validate(manifest["spec"])
    meta = manifest["metadata"]
    name = meta.get("name") or f"{meta['generateName']}local"
    workdir = Path(tempfile.mkdtemp(prefix=f"dagwright-{name}-"))
    try:
        local = LocalRun(name, spec, build_dag(spec), workdir, console)
        for job in local.dag.jobs.values():
            local.command_line(job)  # every job must have something to run
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    console.print(f"running {name} locally ({len(local.dag.jobs)} jobs); logs in {workdir}")
    phase = local.run()
    style = "green" if phase is ExecutionPhase.SUCCEEDED else "red"
    console.print(f"{name} [{style}]{phase.value}[/]")
    for log in local.failed_logs():
        console.print(f"[red]{log.name}[/] (last lines):\n{_tail(log)}")
    return EXIT_OK if phase is ExecutionPhase.SUCCEEDED else EXIT_FAILED


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    if args.watch:
        return _watch(args, args.name, console)
    status = _get(args, args.name).get("status") or {}
    console.print(
        f"[bold]{args.name}[/] {status.get('phase', 'Pending')} "
        f"{status.get('progress', '')}  {summary(status)}"
    )
    if status.get("message"):
        console.print(status["message"])
    if status.get("jobs"):
        console.print(job_table(status))
    return EXIT_FAILED if status.get("phase") in ("Failed", "Cancelled") else EXIT_OK


def _patch(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    phase = (_get(args, args.name).get("status") or {}).get("phase")
    if phase in ENDED_PHASES:
        raise CliError(
            f"dagexecution/{args.name} has ended ({phase}): it cannot be "
            f"{_DONE_TO.get(args.command, args.command)}; run what failed again with "
            f"`dagwright retry {args.name}`, or all of it with `dagwright resubmit {args.name}`",
            EXIT_FAILED,
        )

    async def call(objects: client.CustomObjectsApi) -> dict[str, Any]:
        body = {"spec": spec}
        return await merge_patch(
            objects, EXECUTIONS, args.name, body, namespace=args.namespace, decode=True
        )

    return _kube(args, call)


def cmd_suspend(args: argparse.Namespace, console: Console) -> int:
    _patch(args, {"suspend": True})
    console.print(f"dagexecution/{args.name} suspended: nothing new starts, running jobs finish")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    _patch(args, {"suspend": False})
    console.print(f"dagexecution/{args.name} resumed")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    mode = "Stop" if args.graceful else "Terminate"
    _patch(args, {"shutdown": mode})
    what = "running jobs finish" if args.graceful else "running pods are deleted"
    console.print(f"dagexecution/{args.name} cancelling ({mode}): {what}")
    return EXIT_OK


def _rest(args: argparse.Namespace, method: str, path: str) -> Any:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = f"{args.api_url.rstrip('/')}/api/distributed{path}"
    try:
        response = httpx.request(method, url, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        message = f"cannot reach the REST API at {args.api_url}: {exc}"
        raise CliError(message, EXIT_UNREACHABLE) from exc
    if response.status_code >= 400:
        raise _refused(method, path, response.status_code, response.content)
    return response.json() if response.content else None


def _refused(method: str, path: str, status: int, body: bytes) -> CliError:
    """The API's answer to a refused call, as the CLI says it."""
    text = body.decode(errors="replace")
    try:
        problem = json.loads(text)
        message = str(problem.get("error", text))
        if problem.get("detail"):
            message += f": {problem['detail']}"
    except (ValueError, AttributeError):
        message = text
    return CliError(f"{method} {path}: {status} {message}", EXIT_FAILED)


def cmd_workers(args: argparse.Namespace, console: Console) -> int:
    table = Table("WORKER", "SOURCE", "POOL", "CAPABILITIES", "LOAD", "HEALTHY", box=None)
    for w in _rest(args, "GET", "/workers"):
        table.add_row(
            w["workerId"],
            w["source"],
            w.get("pool") or "",
            ",".join(w["capabilities"]),
            f"{w['currentLoad']}/{w['maxConcurrency']}",
            "[green]yes[/]" if w["healthy"] else "[red]no[/]",
        )
    console.print(table)
    return EXIT_OK


def cmd_queue(args: argparse.Namespace, console: Console) -> int:
    if args.action == "stats":
        stats = _rest(args, "GET", "/queue/stats")
    else:
        stats = _rest(args, "POST", f"/queue/{args.action}")
    state = "[yellow]paused[/]" if stats["paused"] else "[green]running[/]"
    console.print(f"queue {state}: {stats['queued']} jobs queued")
    table = Table("POOL", "QUEUED", "SLOTS USED", box=None)
    for pool in stats["pools"]:
        table.add_row(pool["pool"], str(pool["queued"]), f"{pool['slotsUsed']}/{pool['slots']}")
    console.print(table)
    by_phase = ", ".join(f"{k} {v}" for k, v in stats["executions"].items())
    console.print(f"executions: {by_phase or 'none'}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> list[dict[str, Any]]:
    async def call(objects: client.CustomObjectsApi) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if args.selector:
            query["label_selector"] = args.selector
        if args.phase:
            query["field_selector"] = f"status.phase={args.phase}"
        items: list[dict[str, Any]] = []
        while True:  # paged, as kubectl does: big clusters list in chunks
            if args.all_namespaces:
                page = await objects.list_cluster_custom_object(
                    GROUP, API_VERSION, EXECUTIONS, limit=500, **query
                )
            else:
                page = await objects.list_namespaced_custom_object(
                    GROUP, API_VERSION, args.namespace, EXECUTIONS, limit=500, **query
                )
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["_continue"] = token

    return _kube(args, call)


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return ""
    seconds = max(0, int(time.time() - _parse(timestamp)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _duration(status: dict[str, Any]) -> str:
    started, ended = status.get("startedAt"), status.get("finishedAt")
    if not started:
        return ""
    seconds = (_parse(ended) if ended else time.time()) - _parse(started)
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _output(console: Console, data: Any, fmt: str) -> None:
    """Objects as kubectl prints them (without managedFields), written as
    they are: not through rich, which would read `:running:` as an emoji."""
    for obj in data.get("items", [data]):
        (obj.get("metadata") or {}).pop("managedFields", None)
    text = (
        json.dumps(data, indent=2) + "\n"
        if fmt == "json"
        else yaml.safe_dump(data, sort_keys=False)
    )
    console.file.write(text)


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    items = _list(args)
    if args.output in ("json", "yaml"):
        _output(console, {"apiVersion": "v1", "kind": "List", "items": items}, args.output)
        return EXIT_OK
    columns = ["NAMESPACE"] if args.all_namespaces else []
    columns += ["NAME", "PHASE", "PROGRESS", "FAILED", "AGE"]
    wide = args.output == "wide"
    if wide:
        columns += ["PRIORITY", "DURATION", "MESSAGE"]
    table = Table(*columns, box=None)
    for obj in items:
        meta, status = obj["metadata"], obj.get("status") or {}
        row = [meta["namespace"]] if args.all_namespaces else []
        row += [
            meta["name"],
            status.get("phase") or "Pending",
            status.get("progress") or "",
            str((status.get("counts") or {}).get("failed", 0)),
            _age(meta.get("creationTimestamp")),
        ]
        if wide:
            row += [
                str((obj.get("spec") or {}).get("priority", 5)),
                _duration(status),
                (status.get("message") or "")[:80],
            ]
        table.add_row(*row, style=None)
    if items:
        console.print(table)
    else:
        where = "any namespace" if args.all_namespaces else f"namespace {args.namespace}"
        console.print(f"no executions in {where}")
    return EXIT_OK


def cmd_get(args: argparse.Namespace, console: Console) -> int:
    if args.output in ("json", "yaml"):
        _output(console, _get(args, args.name), args.output)
        return EXIT_OK
    return cmd_status(args, console)


def cmd_delete(args: argparse.Namespace, console: Console) -> int:
    async def call(objects: client.CustomObjectsApi) -> Any:
        return await objects.delete_namespaced_custom_object(
            GROUP, API_VERSION, args.namespace, EXECUTIONS, args.name
        )

    _kube(args, call)
    # Gone once the operator has released what it held (its finalizer), as
    # `kubectl delete` waits.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _get(args, args.name)
        except CliError:
            break
        time.sleep(0.3)
    console.print(f"dagexecution/{args.name} deleted (its pods go with it)")
    return EXIT_OK


def cmd_wait(args: argparse.Namespace, console: Console) -> int:
    """Until the execution ends; the exit code says how (0 succeeded, 1 not)."""
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
        phase = (_get(args, args.name).get("status") or {}).get("phase")
        if phase in ENDED_PHASES:
            console.print(f"dagexecution/{args.name} {phase}")
            return EXIT_OK if phase == "Succeeded" else EXIT_FAILED
        if deadline is not None and time.monotonic() >= deadline:
            console.print(
                f"dagexecution/{args.name} still {phase or 'Pending'} after {args.timeout:g}s"
            )
            return EXIT_TIMEOUT
        time.sleep(0.5)


def cmd_lint(args: argparse.Namespace, console: Console) -> int:
    """Check files offline, as the API server and operator would (no cluster)."""
    bad = 0
    for file in args.files:
        try:
            manifest = load_execution(Path(file))
        except ManifestError as exc:
            bad += 1
            console.print(f"[red]{file}[/]: {exc}")
            continue
        jobs = len((manifest.get("spec") or {}).get("jobs") or [])
        console.print(f"[green]{file}[/]: ok ({jobs} jobs)")
    return EXIT_USAGE if bad else EXIT_OK


def cmd_retry(args: argparse.Namespace, console: Console) -> int:
    """Run the failed, skipped and cancelled jobs again; succeeded ones stay."""
    obj = _get(args, args.name)
    phase = (obj.get("status") or {}).get("phase")
    if phase not in ENDED_PHASES:
        raise CliError(
            f"dagexecution/{args.name} has not ended ({phase or 'Pending'}): nothing to retry",
            EXIT_FAILED,
        )
    count = int((obj.get("spec") or {}).get("retry") or 0) + 1

    async def call(objects: client.CustomObjectsApi) -> Any:
        body = {"spec": {"retry": count, "shutdown": None, "suspend": False}}
        return await merge_patch(objects, EXECUTIONS, args.name, body, namespace=args.namespace)

    _kube(args, call)
    failed = (obj.get("status") or {}).get("counts") or {}
    rerun = sum(failed.get(k, 0) for k in ("failed", "skipped", "cancelled"))
    console.print(f"dagexecution/{args.name} retry {count}: {rerun} jobs run again")
    return _watch(args, args.name, console) if args.watch else EXIT_OK


def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    """A job's log (its latest attempt, or --attempt), through the REST API:
    from the pod while it exists, else the tail kept when the attempt failed.
    Without a job: the failed jobs' logs."""
    if args.job:
        jobs = [args.job]
    else:
        failed = _rest(
            args,
            "GET",
            f"/execute/{args.name}/jobs?namespace={args.namespace}&phase=Failed&limit=10",
        )
        jobs = [job["name"] for job in failed["items"]]
        if not jobs:
            raise CliError(
                f"no job of {args.name} failed: name one (dagwright logs {args.name} JOB)"
            )
    for job in jobs:
        query = f"?namespace={args.namespace}&follow={str(args.follow).lower()}"
        if args.attempt:
            query += f"&attempt={args.attempt}"
        if args.tail:
            query += f"&tail={args.tail}"
        if len(jobs) > 1:
            console.file.write(f"==> {job} <==\n")
        _stream(args, f"/execute/{args.name}/jobs/{job}/logs{query}", console)
    return EXIT_OK


def _stream(args: argparse.Namespace, path: str, console: Console) -> None:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = f"{args.api_url.rstrip('/')}/api/distributed{path}"
    try:
        with httpx.stream("GET", url, headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                raise _refused("GET", path, response.status_code, response.read())
            for chunk in response.iter_text():
                console.file.write(chunk)
                console.file.flush()
    except httpx.HTTPError as exc:
        message = f"cannot reach the REST API at {args.api_url}: {exc}"
        raise CliError(message, EXIT_UNREACHABLE) from exc


def cmd_resubmit(args: argparse.Namespace, console: Console) -> int:
    """A new execution from an existing one's spec (its controls reset)."""
    old = _get(args, args.name)
    controls = ("suspend", "shutdown", "retry")
    spec = {k: v for k, v in (old.get("spec") or {}).items() if k not in controls}
    labels = old["metadata"].get("labels") or {}
    manifest = {
        "apiVersion": f"{GROUP}/{API_VERSION}",
        "kind": "DAGExecution",
        "metadata": {"generateName": f"{args.name[:56]}-", "labels": labels},
        "spec": spec,
    }

    async def call(objects: client.CustomObjectsApi) -> Any:
        return await objects.create_namespaced_custom_object(
            GROUP, API_VERSION, args.namespace, EXECUTIONS, manifest
        )

    name = _kube(args, call)["metadata"]["name"]
    console.print(f"dagexecution/{name} created from {args.name}")
    return _watch(args, name, console) if args.watch else EXIT_OK


def cmd_jobs(args: argparse.Namespace, console: Console) -> int:
    """Per-job state at any size (through the REST API: it lives in Redis)."""
    query = f"?namespace={args.namespace}&limit=1000"
    if args.phase:
        query += f"&phase={args.phase}"
    table = Table(
        "JOB", "PHASE", "ATTEMPT", "FAILURES", "POOL", "NODE", "DURATION", "MESSAGE", box=None
    )
    token: str | None = None
    shown = 0
    while True:
        page = _rest(
            args,
            "GET",
            f"/execute/{args.name}/jobs{query}" + (f"&continue={token}" if token else ""),
        )
        for job in page["items"]:
            duration = job.get("durationSeconds")
            table.add_row(
                job["name"],
                job["phase"],
                str(job["attempt"]),
                f"{job['failures']}+{job['infraFailures']}",
                job.get("pool") or "",
                job.get("node") or "",
                f"{duration:.1f}s" if duration is not None else "",
                (job.get("message") or "")[:80],
            )
            shown += 1
        token = page.get("continue")
        if not token or (args.limit and shown >= args.limit):
            break
    console.print(table)
    console.print(f"{page['total']} jobs" + (f" {args.phase}" if args.phase else ""))
    return EXIT_OK


# --- wiring -----------------------------------------------------------------------


def _common(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (``-n`` as
    kubectl users type it): defaults on the top level only, so one given
    after the command is not overwritten."""
    common = argparse.ArgumentParser(add_help=False)

    def default(value: str | None) -> Any:
        return argparse.SUPPRESS if suppress else value

    common.add_argument("--kubeconfig", default=default(os.environ.get("KUBECONFIG")))
    common.add_argument(
        "-n",
        "--namespace",
        default=default(os.environ.get("DAGWRIGHT_NAMESPACE", "default")),
    )
    common.add_argument(
        "--api-url", default=default(os.environ.get("DAGWRIGHT_API_URL", "http://127.0.0.1:8080"))
    )
    common.add_argument("--token", default=default(os.environ.get("DAGWRIGHT_TOKEN")))
    return common


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="dagwright", description=__doc__.splitlines()[0], parents=[_common(False)]
    )
    top.add_argument("--version", action="version", version=f"dagwright {VERSION}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common(True)]

    def command(name: str, run: Callable[[argparse.Namespace, Console], int], text: str) -> Any:
        cmd = sub.add_parser(name, help=text, parents=common)
        cmd.set_defaults(run=run)
        return cmd

    submit = command("submit", cmd_submit, "create an execution from a manifest or execute JSON")
    submit.add_argument(
        "file", help="a DAGExecution manifest (name or generateName), or execute JSON"
    )
    submit.add_argument("--name", help="override metadata.name")
    submit.add_argument("-w", "--watch", action="store_true", help="follow it until it ends")

    run_cmd = command("run", cmd_run, "submit and follow; --local: run the commands here")
    run_cmd.add_argument("file")
    run_cmd.add_argument(
        "--local",
        action="store_true",
        help="run every job's command as a local process (no cluster), same scheduling and retries",
    )

    for name, run, text in (
        ("status", cmd_status, "phase, progress and per-job state"),
        ("get", cmd_get, "phase, progress and per-job state; -o json|yaml: the object"),
    ):
        cmd = command(name, run, text)
        cmd.add_argument("name")
        cmd.add_argument("-w", "--watch", action="store_true", help="live view until it ends")
        cmd.add_argument("-o", "--output", choices=["json", "yaml"])

    listing = command("list", cmd_list, "executions: phase, progress, failed jobs, age")
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    listing.add_argument("--phase", choices=[p.value for p in ExecutionPhase])
    listing.add_argument(
        "-l", "--selector", help="label selector, e.g. dagwright.io/workflow=nightly"
    )
    listing.add_argument("-o", "--output", choices=["wide", "json", "yaml"])

    jobs = command("jobs", cmd_jobs, "per-job state at any DAG size (REST API)")
    jobs.add_argument("name")
    jobs.add_argument("--phase", choices=[p.value for p in JobPhase])
    jobs.add_argument("--limit", type=int, default=0, help="show at most this many")

    for name, run, text in (
        ("suspend", cmd_suspend, "start nothing new; running jobs finish"),
        ("resume", cmd_resume, "continue a suspended execution"),
        ("cancel", cmd_cancel, "end the execution (Cancelled)"),
        ("delete", cmd_delete, "delete the execution and its pods"),
    ):
        cmd = command(name, run, text)
        cmd.add_argument("name")
        if name == "cancel":
            cmd.add_argument(
                "--graceful", action="store_true", help="let running jobs finish (Stop)"
            )

    wait = command(
        "wait", cmd_wait, "until it ends; exit 0 succeeded, 1 failed or cancelled, 4 timeout"
    )
    wait.add_argument("name")
    wait.add_argument("--timeout", type=float, default=0, help="seconds (0: no limit)")

    logs = command("logs", cmd_logs, "a job's log (REST API); without a job, the failed ones'")
    logs.add_argument("name")
    logs.add_argument("job", nargs="?")
    logs.add_argument("--attempt", type=int, help="default: the latest")
    logs.add_argument("-f", "--follow", action="store_true", help="keep streaming while it runs")
    logs.add_argument("--tail", type=int, help="only the last lines")

    retry = command("retry", cmd_retry, "run the failed, skipped and cancelled jobs again")
    retry.add_argument("name")
    retry.add_argument("-w", "--watch", action="store_true", help="follow it until it ends")

    resubmit = command("resubmit", cmd_resubmit, "a new execution from an existing one's spec")
    resubmit.add_argument("name")
    resubmit.add_argument("-w", "--watch", action="store_true", help="follow it until it ends")

    lint = command("lint", cmd_lint, "check manifests offline (schema, cycles, dependencies)")
    lint.add_argument("files", nargs="+")

    command("workers", cmd_workers, "pool nodes and registered workers (REST API)")

    queue = command("queue", cmd_queue, "queue stats, or pause/resume all new starts")
    queue.add_argument("action", nargs="?", choices=["stats", "pause", "resume"], default="stats")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    console = Console(highlight=False)
    try:
        code = args.run(args, console)
    except CliError as exc:
        Console(stderr=True, highlight=False).print(f"[red]error:[/] {exc}")
        code = exc.code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
