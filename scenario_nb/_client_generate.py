"""The client's generations: a request resolved and checked locally, priced by a dry run, sent (one or many side
by side) as live `Generation` handles the engine keeps current, and the same request found again for re-run safety."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

from ._engine import Engine
from ._errors import NotFoundError
from ._estimate import CostEstimate
from ._generation import Generation
from ._prompts import prompt_of
from ._history import History
from ._http import Transport
from ._models import Model, validate_inputs


class GenerationRequests:
    """Part of `ScenarioClient`: what it reads of the rest of the client is declared here."""

    _http: Transport
    _engine: Engine
    backend_id: str
    find_model: Callable[[str], Model]
    route: Callable[..., tuple[Model, dict]]

    if TYPE_CHECKING:  # the client's read-only properties
        @property
        def history(self) -> History: ...

    # -- Generation --------------------------------------------------------------------------------
    def prepare(self, model: Union[str, Model], prompt: Optional[str] = None, *,
                base_model: Optional[str] = None, **inputs: Any) -> tuple[Model, Model, dict]:
        """Resolve and validate a request locally: (requested model, model to run, body).

        `model` is a Model, an id, or a name (as `find_model` takes it: exact or a unique prefix)."""
        requested = model if isinstance(model, Model) else self.find_model(model)
        scale = inputs.get("lorasScale")
        runnable, extra = self.route(requested, base_model, scaled=scale is not None)
        body = dict(inputs)
        if prompt is not None:
            body[runnable.prompt_name] = prompt
        body.update(extra)
        if scale is not None and "lorasScale" in extra:  # the caller's scale, not the default 1
            body["lorasScale"] = scale
        return requested, runnable, validate_inputs(runnable, body)

    def estimate(self, model: Union[str, Model], prompt: Optional[str] = None, *,
                 base_model: Optional[str] = None, **inputs: Any) -> CostEstimate:
        """Price a request with a dry run (HTTP 269): nothing is created or spent."""
        requested, runnable, body = self.prepare(model, prompt, base_model=base_model, **inputs)
        data = self._http.request("POST", f"/generate/custom/{runnable.id}", params={"dryRun": "true"},
                                  json_body=body)
        return CostEstimate.parse(data, requested.id, body)

    def generate(self, model: Union[str, Model], prompt: Optional[str] = None, *,
                 base_model: Optional[str] = None, source: str = "api", **inputs: Any) -> Generation:
        """Start a generation and return its live `Generation` handle as soon as the request is answered.

        `model` (and `base_model`) is a name ("FLUX.2 dev", or a unique start of one) or an id. `inputs` are
        the model's own input names (`aspectRatio`, `numOutputs`, `seed`, ...). A trained LoRA or composition
        runs through the base model that accepts it. The request is written to the
        history before it is sent (a history that cannot be written refuses it: `StorageError`, nothing
        sent). Price it first with `estimate()`. `source` labels the request in the history (the front doors
        use "magic", "panel", "grid"; your own label is kept as given).
        """
        return self._engine.submit(self._handle(model, prompt, base_model, source, inputs))

    def generate_many(self, model: Union[str, Model], prompts: Iterable[str], *, base_model: Optional[str] = None,
                      source: str = "api", **inputs: Any) -> list[Generation]:
        """One generation per prompt, all sent side by side; returns when each request has an answer.

        Every request is validated before any is sent, and each is recorded before it leaves (as with
        `generate`). Much faster than a loop of `generate()` for a batch: the requests overlap.
        """
        handles = [self._handle(model, prompt, base_model, source, inputs) for prompt in prompts]
        return self._engine.submit_many(handles)

    def _handle(self, model: Union[str, Model], prompt: Optional[str], base_model: Optional[str], source: str,
                inputs: dict) -> Generation:
        """A new, validated, not yet sent handle."""
        requested, runnable, body = self.prepare(model, prompt, base_model=base_model, **inputs)
        return Generation(self._engine, model_id=requested.id, run_model_id=runnable.id,
                          base_model_id=None if runnable.id == requested.id else runnable.id,
                          inputs=body, source=source, model_name=requested.name, prompt_name=runnable.prompt_name)

    def previous(self, model: Union[str, Model], body: dict) -> Optional[Generation]:
        """The identical request already sent from this machine to this backend, if any, as a live handle.

        Anything but a failed, canceled or never-created request counts: in flight, queued, unknown, timed
        out, succeeded with outputs stored (shown from the store), or succeeded but not fetched (fetched
        again). Used by re-run safety: it never sends a new generation.
        """
        model_id = (model if isinstance(model, Model) else self.find_model(model)).id
        key = History.request_key(model_id, prompt_of(body), body)
        live = self._engine.live_handle(request_key=key)
        if live is not None:
            return live
        record = self.history.find_reusable(key, self.backend_id)
        if record is None:
            return None
        if self._engine.outputs_stored(record):
            return self._engine.finished_handle(record)
        try:
            return self._engine.follow_record(record)
        except NotFoundError:  # the backend no longer knows it (e.g. an earlier embedded sandbox)
            return None
