"""The client's workflows: listed, read with their `inputs` parsed like a model's (so they validate the same way),
priced by a dry run, and run as a live `Generation`."""

from __future__ import annotations

from typing import Any

from ._engine import Engine
from ._errors import InputError
from ._estimate import CostEstimate
from ._generation import Generation
from ._http import Transport
from ._models import Model, validate_inputs
from ._paging import paged


class WorkflowRuns:
    """Part of `ScenarioClient`: what it reads of the rest of the client is declared here."""

    _http: Transport
    _engine: Engine

    # -- Workflows ---------------------------------------------------------------------------------
    def workflows(self) -> list[dict]:
        """Your workflows (every page)."""
        return list(paged(self._http.get, "/workflows", "workflows", {"pageSize": 50}))

    def workflow(self, workflow_id: str) -> Model:
        """A workflow with its `inputs` parsed like a model's (so it validates the same way)."""
        raw = self._http.get(f"/workflows/{workflow_id}")["workflow"]
        return Model.parse({**raw, "type": "workflow", "custom": True, "status": raw.get("status")})

    def _ready_workflow(self, workflow_id: str, inputs: dict) -> tuple[Model, dict]:
        workflow = self.workflow(workflow_id)
        if workflow.status not in ("ready", ""):
            raise InputError(f"workflow {workflow.name} is {workflow.status}; only ready workflows can run")
        return workflow, validate_inputs(workflow, inputs)

    def estimate_workflow(self, workflow_id: str, **inputs: Any) -> CostEstimate:
        """Price a workflow run with a dry run: nothing is created or spent."""
        _, body = self._ready_workflow(workflow_id, inputs)
        data = self._http.request("PUT", f"/workflows/{workflow_id}/run", params={"dryRun": "true"}, json_body=body)
        return CostEstimate.parse(data, workflow_id, body)

    def run_workflow(self, workflow_id: str, *, source: str = "api", **inputs: Any) -> Generation:
        """Run a workflow (`PUT /workflows/{id}/run`); returns a `Generation` for its job."""
        workflow, body = self._ready_workflow(workflow_id, inputs)
        handle = Generation(self._engine, model_id=workflow_id, run_model_id=workflow_id, inputs=body,
                            source=source, kind="workflow", model_name=workflow.name)
        return self._engine.submit(handle)
