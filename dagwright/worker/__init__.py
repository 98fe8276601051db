"""The job runtime of the worker image, and the SDK training code imports.

from dagwright import worker

start = worker.latest_checkpoint()          # None on a first attempt
for step in range(start.step + 1 if start else 0, steps):
    train_one(step)
    worker.save_checkpoint(f"/ckpt/{step}.pt", step)
    worker.report_progress(step + 1, steps)
    if worker.stopping():                    # SIGTERM: node drain, cancel, failover
        break
worker.set_output("model_uri", f"s3://models/{run_id}")   # declared in the job's outputs
"""

from dagwright.worker.report import ReportError
from dagwright.worker.sdk import (
    Checkpoint,
    attempt,
    config,
    latest_checkpoint,
    outputs,
    report_progress,
    save_checkpoint,
    set_output,
    stopping,
)

__all__ = [
    "Checkpoint",
    "ReportError",
    "attempt",
    "config",
    "latest_checkpoint",
    "outputs",
    "report_progress",
    "save_checkpoint",
    "set_output",
    "stopping",
]
