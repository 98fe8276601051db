"""The pipeline SDK: what it writes, what it refuses, that it runs locally
with the operator's semantics, and that it needs none of the cluster's
dependencies."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dagwright.core.state import ExecutionPhase, JobPhase
from dagwright.pipeline import Job, Pipeline, PipelineError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
import hpo_pipeline  # noqa: E402


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Local runs keep their cache under $XDG_CACHE_HOME: the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_operators_write_dependencies_and_references_imply_them() -> None:
    with Pipeline("p", image="x") as p:
        a = Job("a", outputs=["uri"])
        b = Job("b", args=[f"--in={a.outputs.uri}"])
        c = Job("c")
        d = Job("d", when=(a.outputs.uri != "") & ~(c.phase == "Skipped"))
        e = Job("e", finally_="OnFailure", env={"URI": a.outputs.uri})
        a >> [c]
        [b, c] >> d
    jobs = {j["name"]: j for j in p.spec_dict()["jobs"]}
    assert jobs["b"]["dependsOn"] == ["a"]  # read a's output
    assert jobs["b"]["args"] == ["--in={{ jobs.a.outputs.uri }}"]
    assert jobs["c"]["dependsOn"] == ["a"]
    assert set(jobs["d"]["dependsOn"]) == {"b", "c", "a"}
    assert jobs["d"]["when"] == "(jobs.a.outputs.uri != '') and (not (jobs.c.phase == 'Skipped'))"
    assert "dependsOn" not in jobs["e"]
    assert jobs["e"]["finally"] == "OnFailure"
    dag = p.validate()
    assert dag.finally_jobs == ("e",)
    assert "generateName" not in p.to_manifest()["metadata"]
    assert "finally: OnFailure" in p.to_yaml()
    del e


def test_every_problem_is_refused_before_anything_is_sent() -> None:
    with Pipeline("p", image="x") as p:
        a = Job("a", outputs=["uri"])
        Job("b", args=["{{ jobs.a.outputs.nope }}"])
        Job("c", args=["{{ item.lr }}"])
        Job("d", retries=-1)
    with pytest.raises(AttributeError, match="declares no output 'loss'"):
        _ = a.outputs.loss
    with pytest.raises(PipelineError) as caught:
        p.to_yaml()
    assert any("retries" in problem for problem in caught.value.problems)
    del p.jobs[-1]
    with pytest.raises(PipelineError) as caught:
        p.validate()
    text = str(caught.value)
    assert "declares no output 'nope'" in text
    assert "only the jobs of a sweep" in text


def test_the_example_runs_locally_picks_the_best_model_and_is_cached_the_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pipeline = hpo_pipeline.build(lrs=(0.1, 0.01, 0.001), batches=(32, 64))
    first = pipeline.run_local(tmp_path / "one", quiet=True)
    assert first.phase is ExecutionPhase.SUCCEEDED
    assert first.outputs("pick") == {"model_uri": "s3://models/hpo/lr0.01-b64", "accuracy": 0.95}
    assert first.jobs["deploy"].phase is JobPhase.SUCCEEDED
    assert first.jobs["prep"].phase is JobPhase.SUCCEEDED
    notify = (tmp_path / "one" / "notify-1.log").read_text()
    assert "hpo ended Succeeded" in notify
    second = pipeline.run_local(tmp_path / "two", quiet=True)
    assert second.jobs["prep"].phase is JobPhase.CACHED
    assert not (tmp_path / "two" / "prep-1.log").exists()  # it never ran
    assert second.outputs("prep") == first.outputs("prep")


def test_locally_a_false_condition_skips_and_a_failure_still_notifies(tmp_path: Path) -> None:
    skipped = hpo_pipeline.build(lrs=(0.1,), batches=(32,), threshold=0.99).run_local(
        tmp_path / "a", quiet=True
    )
    assert skipped.phase is ExecutionPhase.SUCCEEDED
    assert skipped.jobs["deploy"].phase is JobPhase.SKIPPED
    assert "is false" in skipped.jobs["deploy"].message
    with Pipeline("broken", image="x", retries=0) as p:
        Job("a", command=["sh", "-c", "exit 3"])
        Job("b", command=["true"], depends_on=["a"])
        Job("notify", finally_="OnFailure", command=["sh", "-c", 'echo "$DAGWRIGHT_FAILED_JOBS"'])
    failed = p.run_local(tmp_path / "b", quiet=True)
    assert failed.phase is ExecutionPhase.FAILED
    assert failed.jobs["b"].phase is JobPhase.SKIPPED
    assert (tmp_path / "b" / "notify-1.log").read_text().strip() == "a"


def test_a_retry_policy_applies_locally(tmp_path: Path) -> None:
    with Pipeline("retry", image="x", retries=3, backoff={"initial": "10ms", "max": "10ms"}) as p:
        Job("never", command=["sh", "-c", "exit 2"], retry_policy={"expression": "exitCode != 2"})
        Job(
            "sometimes",
            command=["sh", "-c", "exit 143"],
            retry_policy={"expression": "exitCode in [137, 143]"},
        )
    result = p.run_local(tmp_path, quiet=True)
    assert result.jobs["never"].attempt == 1
    assert result.jobs["sometimes"].attempt == 4


def test_authoring_needs_none_of_the_cluster_dependencies(tmp_path: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {
        dep.split(">")[0].split("<")[0].split("[")[0].lower() for dep in project["dependencies"]
    }
    assert names == {"pydantic", "pyyaml", "httpx", "rich"}
    probe = f"""
import sys
sys.path.insert(0, {str(REPO / "examples")!r})
import hpo_pipeline
p = hpo_pipeline.build(lrs=(0.01,), batches=(64,))
assert "kind: DAGExecution" in p.to_yaml()
assert p.run_local({str(tmp_path)!r}, quiet=True).succeeded
heavy = {{"kopf", "fastapi", "kubernetes_asyncio", "redis", "uvicorn", "prometheus_client"}}
loaded = heavy & set(sys.modules)
assert not loaded, loaded
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
        },
    )
    assert result.stdout.strip() == "ok", result.stderr
