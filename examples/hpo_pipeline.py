"""A hyperparameter sweep written with the dagwright pipeline SDK.

prep (cached) -> train, a sweep over lr x batch -> pick the most accurate
model -> deploy it if its accuracy is above 0.9 -> notify, however it ended.

    python examples/hpo_pipeline.py --local     # run it here, no cluster
    python examples/hpo_pipeline.py --yaml      # the DAGExecution it makes
    python examples/hpo_pipeline.py --submit    # to the cluster of $KUBECONFIG
    python examples/hpo_pipeline.py --submit --api-url http://localhost:8080 --token dev-token

The jobs run small Python programs that stand in for training: a real one
would read the data at $DATA, train, write the model to storage, and set
the same outputs.
"""

from __future__ import annotations

import argparse
import sys

from dagwright.pipeline import Job, Pipeline, item

PREP = """
from dagwright import worker
worker.set_output("data_uri", "s3://datasets/cifar10/v3")
"""

TRAIN = """
import math, os
from dagwright import worker
lr, batch = float(os.environ["LR"]), int(os.environ["BATCH"])
# Stands in for training: best at lr=0.01, batch=64.
accuracy = round(0.95 - abs(math.log10(lr) + 2) * 0.04 - abs(batch - 64) / 2000, 4)
print(f"trained on {os.environ['DATA']} with lr={lr} batch={batch}: accuracy {accuracy}")
worker.set_output("accuracy", accuracy)
worker.set_output("model_uri", f"s3://models/hpo/lr{lr}-b{batch}")
"""

PICK = """
import os
from dagwright import worker
print(f"best model {os.environ['MODEL']} with accuracy {os.environ['ACCURACY']}")
worker.set_output("model_uri", os.environ["MODEL"])
worker.set_output("accuracy", float(os.environ["ACCURACY"]))
"""


def build(
    lrs: tuple[float, ...] = (0.1, 0.03, 0.01, 0.003, 0.001),
    batches: tuple[int, ...] = (32, 64, 128),
    image: str = "ghcr.io/dagwright/worker:0.1.0",
    threshold: float = 0.9,
    namespace: str | None = None,
) -> Pipeline:
    py = ["python", "-c"]
    with Pipeline("hpo", namespace=namespace, image=image, parallelism=8, retries=1) as p:
        prep = Job("prep", command=[*py, PREP], outputs=["data_uri"], cache={"max_age": "24h"})
        train = Job(
            "train",
            matrix={"lr": list(lrs), "batch": list(batches)},
            command=[*py, TRAIN],
            env={"LR": item.lr, "BATCH": item.batch, "DATA": prep.outputs.data_uri},
            outputs=["accuracy", "model_uri"],
            # An OOM kill or an eviction is worth another try; a bug is not.
            retry_policy={"retry_on": "OnTransient"},
        )
        pick = Job(
            "pick",
            command=[*py, PICK],
            env={
                "MODEL": train.outputs.model_uri.argmax("accuracy"),
                "ACCURACY": train.outputs.accuracy.max(),
            },
            outputs=["model_uri", "accuracy"],
        )
        Job(
            "deploy",
            when=pick.outputs.accuracy > threshold,
            command=["sh", "-c", 'echo "deploying $MODEL"'],
            env={"MODEL": pick.outputs.model_uri},
        )
        Job(
            "notify",
            finally_="Always",
            command=[
                "sh",
                "-c",
                'echo "hpo ended $DAGWRIGHT_EXECUTION_PHASE; failed: $DAGWRIGHT_FAILED_JOBS"',
            ],
        )
        # (deploy reads pick's outputs, pick reads train's, train reads
        # prep's: each is already a dependency; >> says so explicitly.)
        prep >> train >> pick
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--local", action="store_true")
    mode.add_argument("--yaml", action="store_true")
    mode.add_argument("--submit", action="store_true")
    parser.add_argument("--api-url")
    parser.add_argument("--token")
    parser.add_argument("-n", "--namespace")
    args = parser.parse_args(argv)
    pipeline = build(namespace=args.namespace)
    if args.yaml:
        print(pipeline.to_yaml(), end="")
        return 0
    if args.local:
        result = pipeline.run_local()
        print(f"{result.phase.value}; pick: {result.outputs('pick')}")
        return 0 if result.succeeded else 1
    submission = pipeline.submit(api_url=args.api_url, token=args.token)
    print(f"submitted {submission.namespace}/{submission.name}; waiting")
    phase = submission.wait()
    print(phase)
    return 0 if phase == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
