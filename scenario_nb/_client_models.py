"""The client's models: listing them, one by id or name, the public catalog, and the route that runs a trained
LoRA or composition through the base model that accepts it. Lists and models are cached per client, and
forgotten the moment this client makes, trains or removes a model; another kernel's change reaches name lookups
within a minute (a model not yet trained is always read afresh, so one trained elsewhere runs at once)."""

from __future__ import annotations

import difflib
import re
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Optional, Union

from ._errors import InputError, NotFoundError, PermissionDeniedError
from ._http import Transport
from ._models import Model
from ._paging import joined, paged
from ._training import Training

# Where each recorded LoRA type runs (contract §12b.6). Other types are found in the catalog.
KNOWN_BASES = {
    "flux.1-lora": "model_bfl-flux-1-dev", "flux.1-composition": "model_bfl-flux-1-dev",
    "flux.2-dev-lora": "model_bfl-flux-2-dev", "flux.2-dev-edit-lora": "model_bfl-flux-2-dev",
    "flux.1-kontext-lora": "model_flux-kontext-editing",
    "qwen-image-edit-2511-lora": "model_qwen-image-edit-2511",
    "zimage-lora": "model_z-image", "zimage-turbo-lora": "model_z-image", "zimage-de-turbo-lora": "model_z-image",
}


def _family(text: str) -> str:
    """'flux.2-dev-lora' and 'model_bfl-flux-2-dev' both give 'flux2dev': a hint for base-model search."""
    text = re.sub(r"(-edit)?-(lora|composition)$", "", text.lower())
    return re.sub(r"[^a-z0-9]", "", text.replace("model_", "").replace("bfl", ""))


class CatalogCache:
    """What the catalog has read, per client: models by id, my models (and when they were listed), the public
    and runnable lists, the base model for each LoRA type. A training handle is given `forget_when_trained`, so
    it holds this cache, never the client. Whoever shows a list of models (the panel) can ask to be told when
    it changes (`on_change`)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._listeners: list[Callable[[], Any]] = []  # each gives the callback, or None once it is gone
        self._ended: set[str] = set()  # trainings whose end was already told
        self.models: dict[str, Model] = {}
        self.public: Optional[list[Model]] = None
        self.own: Optional[tuple[float, list[Model]]] = None
        self.base_for_type: dict[str, Model] = {}
        self.runnable: Optional[list[Model]] = None

    def forget(self, model_id: Optional[str] = None) -> None:
        """A model was made, trained or removed: list my models afresh next time, and read this one again."""
        with self.lock:
            self.own = None
            if model_id is not None:
                self.models.pop(model_id, None)
            listeners = list(self._listeners)
        for listener in listeners:
            callback = listener()
            if callback is None:
                with self.lock:
                    self._listeners = [one for one in self._listeners if one is not listener]
            else:
                callback()

    def forget_when_trained(self, handle: Training) -> None:
        """A model that just finished training (or failed): drop the cached copy so it routes as trained."""
        with self.lock:
            first = handle.done and handle.model_id not in self._ended
            if first:
                self._ended.add(handle.model_id)
        if first:
            self.forget(handle.model_id)

    def on_change(self, callback: Callable[[], Any]) -> None:
        """Call `callback()` (from any thread) after each change `forget` hears of; a bound method is held
        weakly, so a panel closed and dropped is not kept alive by its client."""
        listener: Callable[[], Any] = weakref.WeakMethod(callback) if hasattr(callback, "__self__") \
            else (lambda: callback)
        with self.lock:
            self._listeners.append(listener)


class ModelCatalog:
    """Part of `ScenarioClient`: what it reads of the rest of the client is declared here."""

    _http: Transport
    _cache: CatalogCache

    # -- Models ----------------------------------------------------------------------------------
    def models(self, *, public: bool = False, status: Optional[str] = None,
               types: Union[str, Iterable[str], None] = None, tags: Union[str, Iterable[str], None] = None,
               query: Optional[str] = None, page_size: Optional[int] = None) -> list[Model]:
        """Every model (all pages): your own by default, the public catalog with `public=True`.

        `query` keeps models whose name or id contains it (case-insensitive).
        """
        params = {"privacy": "public" if public else "private", "status": status, "pageSize": page_size,
                  "types": joined(types), "tags": joined(tags)}
        found = [Model.parse(row) for row in paged(self._http.get, "/models", "models", params)]
        if query:
            q = query.lower()
            found = [m for m in found if q in m.name.lower() or q in m.id.lower()]
        return found

    def model(self, model_id: str, *, refresh: bool = False) -> Model:
        """One model with its `inputs` parsed (cached per client once it can run: one not yet trained is read
        again each time, as another kernel may be training it)."""
        with self._cache.lock:
            cached = self._cache.models.get(model_id)
        if cached is not None and not refresh and (cached.runnable or cached.trained):
            return cached
        model = Model.parse(self._http.get(f"/models/{model_id}")["model"])
        with self._cache.lock:
            self._cache.models[model_id] = model
        return model

    def find_model(self, text: str) -> Model:
        """A model by id, exact name, or unique name prefix; one clear line on a miss."""
        text = text.strip()
        if text.startswith("model_"):
            try:
                return self.model(text)
            except NotFoundError:
                raise InputError(f"model {text} not found; list your models with %scenario models") from None
        candidates = self._own_models() + self.public_models()
        exact = [m for m in candidates if m.name.lower() == text.lower()]
        if len(exact) == 1 or (exact and len({m.id for m in exact}) == 1):
            return self.model(exact[0].id)
        prefix = [m for m in candidates if m.name.lower().startswith(text.lower())]
        if len({m.id for m in prefix}) == 1:
            return self.model(prefix[0].id)
        if prefix:
            names = ", ".join(f"{m.name} ({m.id})" for m in prefix[:6])
            raise InputError(f"{text!r} matches several models: {names}; use more of the name or the id")
        close = difflib.get_close_matches(text, [m.name for m in candidates], n=3, cutoff=0.5)
        tip = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
            "; list them with %scenario models"
        raise InputError(f"no model named {text!r}{tip}")

    def on_models_changed(self, callback: Callable[[], Any]) -> None:
        """Call `callback()` (from any thread) when this client made, trained or removed a model, so a list on
        screen can read them again (a bound method is held weakly)."""
        self._cache.on_change(callback)

    def _own_models(self, max_age: float = 60.0) -> list[Model]:
        """Your models for name lookups, re-listed at most once a minute (a cell should not pay a round trip)."""
        with self._cache.lock:
            cached = self._cache.own
        if cached is None or time.monotonic() - cached[0] > max_age:
            cached = (time.monotonic(), self.models())
            with self._cache.lock:
                self._cache.own = cached
        return cached[1]

    def public_models(self) -> list[Model]:
        """The public catalog of runnable models (cached per client)."""
        with self._cache.lock:
            if self._cache.public is not None:
                return self._cache.public
        catalog = self.models(public=True)
        with self._cache.lock:
            self._cache.public = catalog
        return catalog

    def _runnable_catalog(self) -> list[Model]:
        """The public models that can run (type `custom`), listed with the API's own type filter, cached."""
        with self._cache.lock:
            if self._cache.runnable is not None:
                return self._cache.runnable
        found = [m for m in self.models(public=True, types="custom") if m.runnable]
        with self._cache.lock:
            self._cache.runnable = found
        return found

    def base_model_for(self, model: Model) -> Model:
        """The platform model that runs a trained LoRA or composition of this type (cached per type).

        The recorded base for the type first (contract §12b.6); else the public runnable models whose id,
        name or `compliantModelIds` hint names the type's family; else the rest of the catalog, in its order.
        The winner is the first whose `model`/`model_array` input lists the type in `modelTypes`.
        """
        with self._cache.lock:
            if model.type in self._cache.base_for_type:
                return self._cache.base_for_type[model.type]
        family = _family(model.type)
        hints = {_family(str(s)) for s in model.raw.get("compliantModelIds") or []} | {family}
        known = KNOWN_BASES.get(model.type)
        runnable = self._runnable_catalog()
        named = [m for m in runnable if m.id != known and
                 any(h and (h in _family(m.id) or h in _family(m.name)) for h in hints)]
        rest = [m for m in runnable if m not in named and m.id != known]
        for candidate in ([known] if known else []) + [m.id for m in named] + [m.id for m in rest][:60]:
            try:
                full = self.model(candidate)
            except (NotFoundError, PermissionDeniedError):
                continue
            if any(i.type in ("model", "model_array") and model.type in i.model_types for i in full.inputs):
                with self._cache.lock:
                    self._cache.base_for_type[model.type] = full
                return full
        raise InputError(f"no public base model accepts {model.type} models like {model.name}; "
                         f"pass base_model= with a model that does")

    def route(self, model: Model, base_model: Optional[str] = None, *, scaled: bool = False) -> tuple[Model, dict]:
        """The runnable model and the extra inputs that run `model` (itself, or a LoRA via its base).

        `scaled`: the caller sets the LoRA's scale, so the LoRA goes in the base's LoRA list (a single
        `modelId` slot takes no scale)."""
        if model.runnable:
            return model, {}
        if not model.trained:
            raise InputError(f"model {model.name} is {model.status}, not trained yet; it cannot generate")
        base = self.find_model(base_model) if base_model else self.base_model_for(model)
        single = None if scaled else next((i for i in base.inputs if i.type == "model" and
                                           model.type in i.model_types), None)
        if single is not None:
            return base, {single.name: model.id}
        many = next((i for i in base.inputs if i.type == "model_array" and
                     (not i.model_types or model.type in i.model_types)), None)
        if many is None:
            raise InputError(f"base model {base.name} takes no LoRA input for {model.type}")
        loras = base.ui_config.get("lorasComponent") or {}
        scale_name = loras.get("scaleInput") or "lorasScale"
        extra: dict = {many.name: [model.id]}
        if base.input(scale_name) is not None:
            extra[scale_name] = [1.0]
        return base, extra
