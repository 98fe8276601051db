"""``dagwright run --local``: the core's scheduling with local processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def run_file(tmp_path: Path, manifest: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "dagwright.cli", "run", str(manifest), "--local"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    return done.returncode, done.stdout + done.stderr


def run_local(tmp_path: Path, spec: dict[str, object]) -> tuple[int, str]:
    manifest = tmp_path / "dag.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "dagwright.io/v1alpha1",
                "kind": "DAGExecution",
                "metadata": {"name": "local"},
                "spec": {"defaults": {"image": "ignored-locally"}, **spec},
            }
        )
    )
    return run_file(tmp_path, manifest)


def test_dependencies_retries_and_config(tmp_path: Path) -> None:
    code, out = run_local(
        tmp_path,
        {
            "parallelism": 2,
            "defaults": {
                "image": "ignored-locally",
                "retries": 2,
                "backoff": {"initial": "200ms", "factor": 2, "max": "1s"},
            },
            "jobs": [
                {"name": "prep", "command": ["sh", "-c", "echo data > prep.out"]},
                {
                    "name": "flaky",
                    "dependsOn": ["prep"],
                    "command": ["sh", "-c", "[ -e seen ] || { touch seen; exit 3; }"],
                },
                {
                    "name": "train",
                    "dependsOn": ["prep"],
                    "config": {"epochs": 2},
                    "command": ["sh", "-c", 'test -e prep.out && echo "$DAGWRIGHT_CONFIG" > t.out'],
                },
                {"name": "report", "dependsOn": ["flaky", "train"], "command": ["cat", "t.out"]},
            ],
        },
    )
    assert code == 0, out
    assert "flaky Backoff: exit code 3" in out
    assert "flaky Succeeded (attempt 2)" in out
    assert out.index("train Succeeded") < out.index("report Starting")
    assert (tmp_path / "t.out").read_text().strip() == '{"epochs": 2}'
    assert "local Succeeded" in out


def test_a_failure_skips_dependents_and_shows_the_log(tmp_path: Path) -> None:
    code, out = run_local(
        tmp_path,
        {
            "defaults": {"image": "ignored-locally", "retries": 0},
            "jobs": [
                {"name": "broken", "command": ["sh", "-c", "echo boom-detail; exit 5"]},
                {"name": "after", "dependsOn": ["broken"], "command": ["touch", "after.out"]},
            ],
        },
    )
    assert code == 1, out
    assert "broken Failed: exit code 5" in out
    assert "after Skipped" in out
    assert "boom-detail" in out  # the failed job's log tail
    assert not (tmp_path / "after.out").exists()


def test_timeout_stops_the_process(tmp_path: Path) -> None:
    code, out = run_local(
        tmp_path,
        {
            "defaults": {"image": "ignored-locally", "retries": 0},
            "jobs": [{"name": "slow", "timeout": "500ms", "command": ["sleep", "30"]}],
        },
    )
    assert code == 1, out
    assert "slow Failed" in out
    assert "timed out" in out or "timeout" in out


def test_a_job_without_a_command_is_refused_up_front(tmp_path: Path) -> None:
    code, out = run_local(tmp_path, {"jobs": [{"name": "nothing"}]})
    assert code == 2
    assert "job 'nothing' has no command or args to run locally" in out


def test_the_shipped_local_example_runs(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "local-pipeline.yaml"
    code, out = run_file(tmp_path, example)
    assert code == 0, out
    assert "Succeeded" in out
