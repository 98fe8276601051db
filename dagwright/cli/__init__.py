"""``dagwright``: submit and follow executions, pause the queue, list workers.

Executions are DAGExecution objects, so those commands speak the Kubernetes
API (your kubeconfig, your RBAC); queue and worker commands read Redis-backed
state through the REST API (``--api-url``, ``$DAGWRIGHT_TOKEN``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from rich.console import Console
from rich.table import Table

from dagwright.cli.local import LocalRun
from dagwright.cli.manifests import load_execution
from dagwright.cli.view import follow, job_table, summary
from dagwright.core.graph import build_dag
from dagwright.core.spec import DAGExecutionSpec
from dagwright.core.state import ExecutionPhase
from dagwright.errors import ManifestError
from dagwright.kube.client import error_message, merge_patch, new_api_client
from dagwright.names import EXECUTIONS, GROUP, VERSION

T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


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
            GROUP, VERSION, args.namespace, EXECUTIONS, name
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
    name = manifest["metadata"]["name"]

    async def call(objects: client.CustomObjectsApi) -> Any:
        return await objects.create_namespaced_custom_object(
            GROUP, VERSION, args.namespace, EXECUTIONS, manifest
        )

    _kube(args, call)
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
    name = manifest["metadata"]["name"]
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
        try:
            body = response.json()
            message = body.get("error", response.text)
            if body.get("detail"):
                message += f": {body['detail']}"
        except ValueError:
            message = response.text
        raise CliError(f"{method} {path}: {response.status_code} {message}", EXIT_FAILED)
    return response.json() if response.content else None


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


# --- wiring -----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dagwright", description=__doc__.splitlines()[0])
    top.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    top.add_argument("-n", "--namespace", default=os.environ.get("DAGWRIGHT_NAMESPACE", "default"))
    top.add_argument(
        "--api-url", default=os.environ.get("DAGWRIGHT_API_URL", "http://127.0.0.1:8080")
    )
    top.add_argument("--token", default=os.environ.get("DAGWRIGHT_TOKEN"))
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = sub.add_parser("submit", help="create an execution from a manifest or execute JSON")
    submit.add_argument("file", help="a DAGExecution manifest, or the seed's execute JSON")
    submit.add_argument("--name", help="override metadata.name")
    submit.add_argument("-w", "--watch", action="store_true", help="follow it until it ends")
    submit.set_defaults(run=cmd_submit)

    run_cmd = sub.add_parser("run", help="submit and follow; --local: run the commands here")
    run_cmd.add_argument("file")
    run_cmd.add_argument(
        "--local",
        action="store_true",
        help="run every job's command as a local process (no cluster), same scheduling and retries",
    )
    run_cmd.set_defaults(run=cmd_run)

    status = sub.add_parser("status", help="phase, progress and per-job state")
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="live view until it ends")
    status.set_defaults(run=cmd_status)

    for name, run, text in (
        ("suspend", cmd_suspend, "start nothing new; running jobs finish"),
        ("resume", cmd_resume, "continue a suspended execution"),
        ("cancel", cmd_cancel, "end the execution (Cancelled)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("name")
        cmd.set_defaults(run=run)
        if name == "cancel":
            cmd.add_argument(
                "--graceful", action="store_true", help="let running jobs finish (Stop)"
            )

    workers = sub.add_parser("workers", help="pool nodes and registered workers (REST API)")
    workers.set_defaults(run=cmd_workers)

    queue = sub.add_parser("queue", help="queue stats, or pause/resume all new starts")
    queue.add_argument("action", nargs="?", choices=["stats", "pause", "resume"], default="stats")
    queue.set_defaults(run=cmd_queue)
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
