"""The web console in a real headless Chromium (Debian's, driven by
Playwright; no browser is downloaded), against the API process, the
operator and the control plane of the test rig.

Screenshots go to a temporary directory, or to docs/console/ when
DAGWRIGHT_SCREENSHOTS=docs/console (``make screenshots``), from where the
README shows them."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client
from playwright.async_api import Browser, Page, async_playwright, expect

from dagwright.devcluster.nodes import SIM_DURATION, SIM_EXIT_CODE
from tests.conftest import API_TOKEN, ApiProcess, Pools, TestCluster, wait_for
from tests.helpers import create_execution, dag, merge_patch

pytestmark = pytest.mark.usefixtures("operator")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("DAGWRIGHT_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-"))
if not SHOTS.is_absolute():
    SHOTS = REPO / SHOTS
SHOTS.mkdir(parents=True, exist_ok=True)
# Chromium as root in a container, on a machine with no outside network:
# no sandbox, and none of its background calls home.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(
            "Debian's chromium is not installed (make install runs hack/ensure-system-deps.sh)"
        )
    async with async_playwright() as playwright:
        found = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield found
        finally:
            await found.close()


async def signed_in(browser: Browser, api: ApiProcess, token: str = API_TOKEN) -> Page:
    page = await browser.new_page(viewport={"width": 1500, "height": 950})
    await page.goto(f"{api.url}/console/")
    await page.fill("#token", token)
    await page.fill("#namespace", api.namespace)
    await page.click("#login")
    return page


async def test_console_shows_executions_live_logs_retry_and_the_queue(
    browser: Browser,
    api_server: ApiProcess,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    pools: Pools,
    cluster: TestCluster,
) -> None:
    await pools.create(["cpu"], max_concurrency=40)
    namespace = api_server.namespace
    async with httpx.AsyncClient() as http:
        served = await http.get(f"{api_server.url}/console/")
    assert "script-src 'self'" in served.headers["content-security-policy"]
    page = await signed_in(browser, api_server)
    await expect(page.locator("h1")).to_have_text("Executions")

    # A 200-job execution appears in the list and its page follows it live
    # to Succeeded, without reloading.
    fan = [{"name": "root"}] + [{"name": f"shard-{i}", "dependsOn": ["root"]} for i in range(199)]
    await create_execution(kube, namespace, "wide", dag(fan, duration="500ms", parallelism=40))
    row = page.locator('tr[data-execution="wide"]')
    await expect(row).to_be_visible(timeout=15_000)
    await page.screenshot(path=str(SHOTS / "executions.png"))
    await row.locator("a").click()
    await expect(page.locator('g.node[data-group="shard"]')).to_be_visible(timeout=10_000)
    await wait_for(
        "the page to show some shards running",
        lambda: _has_running(page),
        within=30,
    )
    await page.screenshot(path=str(SHOTS / "dag.png"))
    await expect(page.locator('.header .phase[data-phase="Succeeded"]')).to_be_visible(
        timeout=90_000
    )
    assert await page.evaluate("document.body.dataset.lastUpdate") is not None  # live, not reloaded

    # A failed job: its log, then retry, and the job runs again.
    failing = [
        {"name": "prep"},
        {
            "name": "bad",
            "dependsOn": ["prep"],
            "retries": 0,
            "annotations": {SIM_DURATION: "300ms", SIM_EXIT_CODE: "3"},
        },
        {"name": "after", "dependsOn": ["bad"]},
    ]
    await create_execution(kube, namespace, "broken", dag(failing))
    await page.goto(f"{api_server.url}/console/#/x/{namespace}/broken")
    await expect(page.locator('.header .phase[data-phase="Failed"]')).to_be_visible(timeout=60_000)
    await page.locator('g.node[data-group="bad"]').click()
    await expect(page.locator("#job-name")).to_contain_text("bad")
    await expect(page.locator("#job-message")).to_contain_text("exit code 3")
    await expect(page.locator("#log-source")).to_contain_text("from ", timeout=15_000)
    if cluster.local is not None:  # the rig's KWOK serves every job container this log
        await expect(page.locator("#log")).to_contain_text("simulated job output", timeout=15_000)
    await page.screenshot(path=str(SHOTS / "job-log.png"))
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click('button[data-action="Retry failed"]')
    await expect(page.locator("#banner")).to_contain_text("Retry failed", timeout=10_000)

    async def second_attempt() -> Any:
        pods = await core.list_namespaced_pod(namespace, label_selector="dagwright.io/job=bad")
        return [
            p for p in pods.items if p.metadata.labels.get("dagwright.io/attempt") == "2"
        ] or None

    await wait_for("attempt 2 of bad", second_attempt, within=60)

    async def two_attempts_shown() -> bool | None:
        await page.locator('g.node[data-group="bad"]').click()
        await page.wait_for_timeout(300)
        return await page.locator("table.attempts tbody tr").count() == 2 or None

    await wait_for("both attempts in the job panel", two_attempts_shown, within=60)

    # Pausing the queue shows on the pools page (and is undone: other tests
    # share the cluster).
    await page.click('nav a[href="#/pools"]')
    await expect(page.locator("#pause")).to_have_attribute("data-paused", "false")
    await page.click("#pause")
    try:
        await expect(page.locator("#queue-state")).to_contain_text("paused", timeout=10_000)
        async with httpx.AsyncClient(base_url=api_server.url, headers=AUTH) as http:
            stats = (await http.get("/api/distributed/queue/stats")).json()
        assert stats["paused"] is True
        await expect(page.locator("tr[data-pool]").first).to_be_visible()
        await page.screenshot(path=str(SHOTS / "pools.png"))
        await page.click("#pause")
        await expect(page.locator("#pause")).to_have_attribute("data-paused", "false")
    finally:
        async with httpx.AsyncClient(base_url=api_server.url, headers=AUTH) as http:
            await http.post("/api/distributed/queue/resume")
    await page.close()


async def _has_running(page: Page) -> bool | None:
    text = await page.locator('g.node[data-group="shard"] title').all_text_contents()
    return any(t.startswith(("Running", "Succeeded")) for t in text) or None


async def test_a_token_without_rights_in_the_namespace_gets_the_apis_403(
    browser: Browser, api_server: ApiProcess, core: client.CoreV1Api, namespace: str
) -> None:
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    request = {"spec": {"audiences": [], "expirationSeconds": 600}}
    token = (
        await core.create_namespaced_service_account_token("nobody", namespace, request)
    ).status.token
    page = await browser.new_page()
    await page.goto(f"{api_server.url}/console/")
    await page.fill("#token", token)
    await page.fill("#namespace", api_server.namespace)
    await page.click("#login")
    await expect(page.locator("#banner")).to_contain_text("403", timeout=10_000)
    await expect(page.locator("#banner")).to_have_attribute("role", "alert")
    await page.close()


async def test_a_10000_job_execution_is_interactive_fast_and_follows_changes(
    browser: Browser, api_server: ApiProcess, kube: client.ApiClient, pools: Pools
) -> None:
    await pools.create(["cpu"])
    namespace = api_server.namespace
    jobs = [{"name": "root", "annotations": {SIM_DURATION: "60s"}}] + [
        {"name": f"j{i}", "dependsOn": ["root"]} for i in range(9999)
    ]
    await create_execution(kube, namespace, "huge", dag(jobs, parallelism=1, suspend=True))
    async with httpx.AsyncClient(base_url=api_server.url, headers=AUTH, timeout=60) as http:

        async def known() -> bool | None:
            # (Not /graph: the page's first load must build it, as a user's would.)
            jobs = await http.get(
                f"/api/distributed/execute/huge/jobs?namespace={namespace}&limit=1"
            )
            return (jobs.status_code == 200 and jobs.json()["total"] == 10_000) or None

        await wait_for("the 10,000-job execution known to the API", known, within=60)
    page = await signed_in(browser, api_server)
    await expect(page.locator("h1")).to_have_text("Executions")
    began = time.monotonic()
    await page.goto(f"{api_server.url}/console/#/x/{namespace}/huge")
    await expect(page.locator('g.node[data-group="j"]')).to_be_visible(timeout=30_000)
    await page.locator('g.node[data-group="j"]').click()  # interactive: it answers a click
    await expect(page.locator(".vrow").first).to_be_visible()
    interactive = time.monotonic() - began
    drawn_ms = int(await page.evaluate("document.body.dataset.interactiveMs"))
    # A state change: resume, and the root job starts. Its Starting reaches
    # the page; the delay is measured from the operator's own clock (the pass
    # that created the pod) to the browser's, on this one machine.
    await page.evaluate(
        """() => { window.seen = {}; const old = document.body.dataset.lastUpdate;
        new MutationObserver(() => { const t = document.querySelector('g.node[data-group^="root"] text');
          if (t && /Starting|Running/.test(t.textContent) && !window.seen.root) window.seen.root = Date.now(); })
          .observe(document.querySelector('svg.dag'), {subtree: true, childList: true, characterData: true}); }"""
    )
    await merge_patch(kube, namespace, "huge", {"spec": {"suspend": False}})
    await wait_for("root shown starting", lambda: _seen(page), within=30)
    seen_ms = float(await page.evaluate("window.seen.root"))
    async with httpx.AsyncClient(base_url=api_server.url, headers=AUTH, timeout=60) as http:
        root = (
            await http.get(f"/api/distributed/execute/huge/jobs/root?namespace={namespace}")
        ).json()
    delay = seen_ms / 1000 - root["createdAt"] if root.get("createdAt") else None
    report = Path(tempfile.mkdtemp(prefix="console-timings-")) / "timings.txt"
    report.write_text(
        f"10000-job execution page interactive after {interactive:.2f}s "
        f"(graph drawn {drawn_ms}ms after its route started); "
        f"root job's Starting reached the page {delay if delay is None else round(delay, 3)}s "
        "after the operator's pass created it\n"
    )
    print(report.read_text())
    await page.screenshot(path=str(SHOTS / "dag-10000.png"))
    await merge_patch(kube, namespace, "huge", {"spec": {"shutdown": "Terminate"}})
    await page.close()
    assert delay is not None


async def _seen(page: Page) -> bool | None:
    return bool(await page.evaluate("window.seen && window.seen.root")) or None
