"""This account's models as the workbench needs them: found by name, made once, drafts listed and removed.

A model is made by `POST /models`; an answer lost on the way is looked for among the models (same name, status
`new`, made after the request left, allowing for clock skew) before anything is made again. A draft is a model
this project made (its id is in the history's trainings) that was never trained: it is reused by the next
training of its name, listed by `drafts()`, and removed only by `delete_draft`.
"""

from __future__ import annotations


from .._errors import APIConnectionError, APIError, InputError, ServerError, StorageError
from .._generation import parse_cost, parse_time
from .._http import Transport
from .._paging import paged
from ._ledger import Ledger

CLOCK_SKEW = 120.0  # seconds the server's clock may be ahead of or behind this machine's


class OwnModels:
    """Reads and makes this account's models (private), and its drafts."""

    def __init__(self, http: Transport, ledger: Ledger) -> None:
        self._http = http
        self._ledger = ledger

    def listed(self) -> list[dict]:
        """Every model of this account (all pages), as the API lists them."""
        return list(paged(self._http.get, "/models", "models", {"privacy": "private"}))

    def named(self, name: str) -> list[dict]:
        """The models of this name (case-insensitive), newest first."""
        same = [m for m in self.listed() if str(m.get("name") or "").strip().lower() == name.strip().lower()]
        return sorted(same, key=lambda m: str(m.get("createdAt") or ""), reverse=True)

    def model(self, model_id: str) -> dict:
        return self._http.get(f"/models/{model_id}")["model"]

    def create(self, name: str, model_type: str) -> str:
        """`POST /models`, once, through the ledger (its own row, `kind` model: written before it leaves, the
        model id once known). A lost answer is looked for (a `new` model of this name made after the request left)
        and adopted; when none is found the row is `unknown` and this raises (the next training of the name finds
        the model, a draft, and settles the row)."""
        row = self._ledger.intent("model", name=name, what=f"create a {model_type} model")
        try:
            answer = self._http.request("POST", "/models", json_body={"name": name, "type": model_type})
        except (APIConnectionError, ServerError):
            made = self._made_since(name, model_type, row.sent_at or 0.0)
            self._ledger.settle(row, "success" if made else "unknown", model_id=made or "")
            if made:
                return made
            raise
        except APIError as exc:  # refused: nothing made
            self._ledger.settle(row, "not-sent", error=exc.reason)
            raise
        except BaseException:  # interrupted while waiting: the model may exist
            self._ledger.settle(row, "unknown", error="interrupted while waiting for the answer")
            raise
        model_id = str(answer["model"]["id"])
        self._ledger.settle(row, "success", model_id=model_id, cost=parse_cost(answer.get("creativeUnitsCost")))
        return model_id

    def _made_since(self, name: str, model_type: str, sent_at: float) -> str:
        made = [m for m in self.named(name) if m.get("status") == "new" and m.get("type") == model_type
                and (parse_time(m.get("createdAt")) or 0.0) >= sent_at - CLOCK_SKEW]
        return str(made[0]["id"]) if made else ""

    def settle_unknown(self, name: str, model: dict) -> None:
        """This name's creations whose answer was lost, settled by the model found of that name (a draft)."""
        try:
            rows = [r for r in self._ledger.history.workbench(self._ledger.backend_id, name)
                    if r.kind == "model" and r.status in ("unknown", "sending")]
        except StorageError:
            return
        for row in rows:
            if (parse_time(model.get("createdAt")) or 0.0) >= (row.sent_at or 0.0) - CLOCK_SKEW:
                self._ledger.settle(row, "success", model_id=str(model.get("id")), error=None)

    def drafts(self) -> list[dict]:
        """Untrained (`new`) models this project made: their ids are in this backend's trainings or model
        creations, or a creation whose answer was lost names them (same name, made after it was sent)."""
        try:
            ours = {r.model_id for r in self._ledger.history.trainings(self._ledger.backend_id, limit=10_000)}
            made = self._ledger.history.workbench(self._ledger.backend_id)
        except StorageError:
            ours, made = set(), []
        ours |= {r.model_id for r in made if r.kind == "model" and r.model_id}
        lost = [r for r in made if r.kind == "model" and r.status in ("unknown", "sending")]
        return [m for m in self.listed() if m.get("status") == "new" and (m.get("id") in ours or any(
            str(m.get("name") or "").strip().lower() == r.model_name.strip().lower() and
            (parse_time(m.get("createdAt")) or 0.0) >= (r.sent_at or 0.0) - CLOCK_SKEW for r in lost))]

    def delete_draft(self, name_or_id: str) -> dict:
        """Remove one draft (by id or name); returns what it was. Refuses anything that is not a draft."""
        wanted = name_or_id.strip()
        drafts = [m for m in self.drafts() if m.get("id") == wanted or
                  str(m.get("name") or "").strip().lower() == wanted.lower()]
        if not drafts:
            raise InputError(f"no draft named {wanted!r}: only untrained models this project made are removed "
                             f"here; list them with %scenario models --drafts")
        if len(drafts) > 1:
            raise InputError(f"{len(drafts)} drafts are named {wanted!r}: "
                             f"{', '.join(str(d.get('id')) for d in drafts)}; name one by its id")
        self._http.request("DELETE", f"/models/{drafts[0]['id']}")
        return drafts[0]

