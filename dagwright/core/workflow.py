"""The seed's workflow format: a list of jobs with ids and dependencies, as
REST clients POST it to ``/execute`` and as the CLI reads it from a file.
Both turn it into the same DAGExecution."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints
from pydantic.alias_generators import to_camel

from dagwright.core.spec import (
    DNS_LABEL,
    MAX_DEPENDENCIES,
    MAX_JOBS,
    DAGExecutionSpec,
    DnsLabel,
    JobFlow,
    JobSettings,
    Priority,
)
from dagwright.names import API_VERSION, DISPLAY_NAME_ANNOTATION, EXECUTION_KIND, WORKFLOW_LABEL


class ExecuteJob(JobSettings, JobFlow):
    """A job as the seed's clients send it; any DAGExecution job field may be added."""

    id: DnsLabel = Field(description="Unique id of the job in the workflow (a DNS label).")
    name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        None, description="Display name."
    )
    type: Annotated[str, StringConstraints(max_length=63)] | None = None
    depends_on: list[DnsLabel] = Field(default_factory=list, max_length=MAX_DEPENDENCIES)
    config: dict[str, Any] | None = None
    priority: Priority | None = None


class ExecuteRequest(BaseModel):
    workflow_id: DnsLabel = Field(description="Workflow the execution belongs to (a DNS label).")
    execution_id: Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)] | None = (
        Field(None, description="Name of the DAGExecution; generated from workflowId when absent.")
    )
    namespace: DnsLabel | None = None
    jobs: list[ExecuteJob] = Field(min_length=1, max_length=MAX_JOBS)
    parallelism: StrictInt = Field(10, ge=1, le=MAX_JOBS)
    priority: Priority = 5
    defaults: JobSettings = Field(default_factory=JobSettings)

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workflowId": "nightly-train",
                    "jobs": [
                        {
                            "id": "prep",
                            "name": "Preprocess",
                            "type": "preprocessing",
                            "requires": ["cpu"],
                        },
                        {
                            "id": "train",
                            "type": "training",
                            "dependsOn": ["prep"],
                            "requires": ["gpu"],
                            "config": {"epochs": 10},
                        },
                    ],
                    "parallelism": 4,
                    "defaults": {"image": "python:3.11-slim"},
                }
            ]
        },
    )

    def execution_name(self) -> str:
        if self.execution_id:
            return self.execution_id
        return f"{self.workflow_id[:56]}-{secrets.token_hex(3)}"

    def to_spec(self) -> DAGExecutionSpec:
        jobs = []
        for job in self.jobs:
            fields = job.model_dump(by_alias=True, exclude_none=True, exclude={"id", "name"})
            if job.name:
                fields["annotations"] = {
                    **fields.get("annotations", {}),
                    DISPLAY_NAME_ANNOTATION: job.name,
                }
            jobs.append({"name": job.id, **fields})
        return DAGExecutionSpec.model_validate(
            {
                "jobs": jobs,
                "parallelism": self.parallelism,
                "priority": self.priority,
                "defaults": self.defaults.model_dump(by_alias=True, exclude_none=True),
            }
        )

    def to_manifest(self, spec: DAGExecutionSpec | None = None) -> dict[str, Any]:
        """The DAGExecution this request creates (the CLI submits the same
        object); ``spec``: ``to_spec()``'s answer, when the caller has it."""
        spec = spec or self.to_spec()
        return {
            "apiVersion": API_VERSION,
            "kind": EXECUTION_KIND,
            "metadata": {
                "name": self.execution_name(),
                "labels": {WORKFLOW_LABEL: self.workflow_id},
            },
            "spec": spec.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True),
        }
