"""The README's curl examples, run as written against a real API process."""

from __future__ import annotations

import asyncio
import json
import os
import re

import httpx
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.names import GROUP, VERSION
from tests.conftest import API_TOKEN, REPO, ApiProcess, OperatorProcess, Pools, wait_for


def readme_examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- rest-examples -->")[1].split("<!-- /rest-examples -->")[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def test_the_readme_has_an_example_for_every_endpoint() -> None:
    from tests.api.test_openapi_fuzz import OPENAPI

    script = "\n".join(readme_examples())
    for path, operations in OPENAPI["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[a-z0-9-]+", path) + r'"'
        for method in operations:
            shown = [
                line
                for line in re.findall(r"curl[^\n]*(?:\\\n[^\n]*)*", script)
                if re.search(pattern, line)
                and (method == "get") == ("-X " not in line)
                and (method == "get" or f"-X {method.upper()}" in line)
            ]
            assert shown, f"README has no curl example for {method.upper()} {path}"


async def test_readme_curl_examples_work(
    api_server: ApiProcess, operator: OperatorProcess, pools: Pools, kube: client.ApiClient
) -> None:
    await pools.create(["cpu"])

    async def healthy() -> bool:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{api_server.url}/api/distributed/health")).status_code == 200

    await wait_for("the operator's first heartbeat", healthy, within=30)
    env = {**os.environ, "API": api_server.url, "DAGWRIGHT_TOKEN": API_TOKEN}
    outputs = []
    for example in readme_examples():
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            example,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"{example}\nfailed: {out.decode()}{err.decode()}"
        outputs.append(out.decode())
    created = json.loads(outputs[0])
    assert created["executionId"] == "nightly-1"
    assert created["jobs"] == 2
    state = json.loads(outputs[1])
    assert state["executionId"] == "nightly-1"
    assert '"shutdown":"Terminate"' in outputs[2]  # the cancel example reached the object
    assert '"workerId":"gpu-box-1"' in outputs[4]
    assert json.loads(outputs[5])["status"] == "ok"
    assert outputs[6].count("not a job pod's token") == 3  # a user's token is no pod's
    listed, _ = json.JSONDecoder().raw_decode(outputs[7])  # the first of two bodies
    assert "nightly-1" in [item["executionId"] for item in listed["items"]]
    assert "continue" in listed
    assert "items" in json.JSONDecoder().raw_decode(outputs[8])[0]
    assert outputs[9]  # the log, or a JSON 404 saying why there is none
    graph, _ = json.JSONDecoder().raw_decode(outputs[10])
    assert graph["names"] == ["prep", "train"]
    assert graph["deps"] == [[], [0]]
    assert '"name":"train"' in outputs[10]  # the job, with what it runs
    assert '"pools":[' in outputs[10]
    assert ": connected" in outputs[10]  # the live feed's first line
    assert "nightly-1" in outputs[11]  # a 409 (still running) or the retried execution
    assert json.loads(outputs[12])["deleted"] is True

    async def gone() -> bool:
        try:
            await client.CustomObjectsApi(kube).get_namespaced_custom_object(
                GROUP, VERSION, api_server.namespace, "dagexecutions", "nightly-1"
            )
        except ApiException as exc:
            return exc.status == 404
        return False

    await wait_for("nightly-1 deleted", gone, within=30)


@pytest.fixture(autouse=True)
async def _no_leftover_execution(api_server: ApiProcess, kube: client.ApiClient) -> None:
    # The examples use a fixed executionId; a rerun in the same session starts clean.
    objects = client.CustomObjectsApi(kube)
    try:
        await objects.delete_namespaced_custom_object(
            GROUP, VERSION, api_server.namespace, "dagexecutions", "nightly-1"
        )
    except client.ApiException as exc:
        if exc.status != 404:
            raise
