"""A training script as users write them: resume from the latest checkpoint,
checkpoint every step, stop cleanly on SIGTERM. Prints what it did."""

from __future__ import annotations

import sys
import time

from dagwright import worker

steps = int(worker.config().get("steps", 40))
ignore_sigterm = bool(worker.config().get("ignoreSigterm", False))
start = worker.latest_checkpoint()
first = (start.step + 1) if start and start.step is not None else 0
print(f"attempt {worker.attempt()} starts at step {first}", flush=True)
for step in range(first, steps):
    time.sleep(0.05)
    worker.save_checkpoint(f"/tmp/ckpt-{step}.pt", step)
    worker.report_progress(step + 1, steps)
    print(f"step {step}", flush=True)
    if worker.stopping() and not ignore_sigterm:
        print(f"stopping after step {step}", flush=True)
        sys.exit(143)
print("done", flush=True)
