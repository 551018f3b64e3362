"""The workbench: everything paid on the way to a training (the model, its price, captions, uploads, the start).

The client checks a training (`TrainingPlan`) and hands it here; from then on only the engine changes the
`Training` handle and its row. The order: the model is created, the training priced by the server's dry run,
the price confirmed, the row written (write-ahead), the images captioned and uploaded, and the training started
by the follower (`TrainingFollower.start_training`), which then keeps it current.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .._errors import (APIConnectionError, APIError, BadRequestError, InputError, RateLimitError, ScenarioError,
                       ServerError, StorageError, SubmitFailedError)
from .._estimate import CostEstimate
from .._generation import parse_cost
from .._http import Transport
from .._local_images import LocalImage
from .._training import Captions, Training, TrainingImage, TrainingOwner, TrainingPlan, thumbnail_uri
from ._captions import Captioner
from ._claims import Claim
from ._claims import claim as claim_name
from ._ledger import Ledger
from ._own_models import OwnModels
from ._trainings import TrainingFollower

if TYPE_CHECKING:
    from .._store import FileStore

Confirm = Callable[[CostEstimate], Any]
UPLOAD_TRIES = 4  # one training image: sent at most this often (429s and answers proven lost)


class Workbench:
    """Creates, prices, captions, uploads and starts trainings of one backend, through the ledger."""

    def __init__(self, owner: TrainingOwner, http: Transport, ledger: Ledger, follower: TrainingFollower, *,
                 store: Callable[[], "FileStore"]) -> None:
        self._owner = owner  # only handed to the handles built here (what they call to cancel)
        self._http = http
        self._ledger = ledger
        self._follower = follower
        self._store_factory = store
        self._captioner = Captioner(http, ledger)
        self._models = OwnModels(http, ledger)

    # -- Captions ------------------------------------------------------------------------------------------
    def caption_images(self, images: list[LocalImage], details_level: str, max_cost: Optional[float]) -> Captions:
        """An editable `{filename: caption}` table; refused before spending when the price is over `max_cost`.
        Captions already made for these images (same content, same settings) are reused, not paid again."""
        if max_cost is not None:
            price = self._captioner.price(images, details_level)
            if price > max_cost:
                raise InputError(f"refused: captioning {len(images)} images is estimated at {price:g} CU, over "
                                 f"max_cost {max_cost:g}; nothing was spent")
        texts, lost = self._captioner.caption_all(images, details_level)
        return Captions({i.name: t for i, t in zip(images, texts, strict=True)},
                        {i.name: thumbnail_uri(i.data) for i in images}, lost=lost)

    # -- Drafts: untrained models this project made --------------------------------------------------------
    def drafts(self) -> list[dict]:
        return self._models.drafts()

    def delete_draft(self, name_or_id: str) -> dict:
        return self._models.delete_draft(name_or_id)

    # -- Training ------------------------------------------------------------------------------------------
    def train(self, plan: TrainingPlan, *, dry_run: bool = False, max_cost: Optional[float] = None,
              confirm: Optional[Confirm] = None) -> Union[Training, CostEstimate]:
        """Claim the name (waiting while another process prepares it), then attach to this name's training if
        there is one (unless `plan.force`); else reuse its draft or make the model, price the training, then
        (unless a dry run) caption, upload and start it."""
        claim = None if dry_run else claim_name(self._ledger, plan.name, plan.type, force=plan.force)
        try:
            return self._train(plan, claim, dry_run=dry_run, max_cost=max_cost, confirm=confirm)
        finally:
            if claim is not None:
                claim.stop()

    def _train(self, plan: TrainingPlan, claim: Optional[Claim], *, dry_run: bool, max_cost: Optional[float],
               confirm: Optional[Confirm]) -> Union[Training, CostEstimate]:
        name, loaded, params = plan.name, plan.images, plan.parameters
        draft: Optional[dict] = None
        try:
            if not plan.force:
                earlier, draft = self._earlier(name, attach=not dry_run)
                if earlier is not None:
                    if claim is not None:
                        claim.drop()
                    earlier._set(note=f"{name} was already being trained here: followed, nothing paid again "
                                      f"(force=True trains a second model)")
                    return earlier
            model_id = str(draft["id"]) if draft else self._models.create(name, plan.type)
            if claim is not None:
                claim.moved(model_id)
        except BaseException:
            if claim is not None:
                claim.drop()
            raise
        handle = Training(self._owner, model_id=model_id, name=name, type=plan.type, parameters=params,
                          status="preparing",
                          images=[TrainingImage(i.name, width=i.width, height=i.height, data=i.data) for i in loaded])
        made_here = draft is None  # a draft that was there before stays, whatever happens
        phase = "prepare"  # until the training is asked to start, any exit removes a model made here
        written = False  # the write-ahead row, once anything is to be paid
        try:
            estimate = self._price(handle, plan)
            if dry_run:
                if made_here:
                    self._abandon(handle, InputError("dry run"), recorded=False)  # the throwaway model goes
                return estimate
            if max_cost is not None and estimate.creative_units > max_cost:
                raise InputError(f"refused: this training is estimated at {estimate}, over max_cost {max_cost:g}; "
                                 f"nothing was spent")
            if confirm is not None:
                confirm(estimate)
            self._ledger.record_training(handle, before_sending=True)  # write-ahead: the model exists
            written = True
            self._prepare(handle, loaded, plan.captions, reuse=draft)
            phase = "start"
            try:
                self._follower.start_training(handle, params)
            except RateLimitError as exc:  # no slot now: the model and its captioned images wait for one
                self._follower.wait_for_slot(handle, exc)
            except (BadRequestError, APIError) as exc:
                raise SubmitFailedError(f"Scenario refused to start the training of {name}: {exc.reason}; "
                                        f"nothing was charged for it" + (" and the model was removed" if made_here
                                                                         else "")) from None
            phase = "started"
        except BaseException as exc:
            if phase == "start" and not isinstance(exc, (SubmitFailedError, StorageError)):
                self._follower.follow_training(handle)  # interrupted while starting: its status will tell
                raise
            kept = self._abandon(handle, exc, recorded=phase != "prepare" or written, remove=made_here)
            if not kept and claim is not None:
                claim.drop()  # nothing paid, nothing left: no row
            raise
        return handle

    def _earlier(self, name: str, *, attach: bool) -> tuple[Optional[Training], Optional[dict]]:
        """This name's training to attach to (a row in flight here; a model training on the server; one trained
        by this project), else its draft to reuse (a `new` model), else neither. Any other model of the name
        (one trained elsewhere, failed, canceled) refuses."""
        try:
            rows = [r for r in self._ledger.history.trainings(self._ledger.backend_id, limit=10_000)
                    if r.name.strip().lower() == name.lower()]
        except StorageError:
            rows = []
        if attach:
            for row in rows:
                if row.status in ("unknown", "training", "waiting"):
                    return self._follower.reattach_training(row.model_id), None
        same = self._models.named(name)
        ours = {r.model_id for r in rows}
        if attach:
            for model in same:
                if model.get("status") == "training" or (model.get("status") == "trained" and model.get("id") in ours):
                    return self._follower.reattach_training(str(model["id"])), None
        drafts = [m for m in same if m.get("status") == "new"]
        if drafts:
            self._models.settle_unknown(name, drafts[0])  # a creation whose answer was lost: this is its model
            return None, drafts[0]
        if same and attach:
            raise InputError(f"you already have a model named {name!r} ({same[0].get('id')}, "
                             f"{same[0].get('status')}); pick another name, or force=True to train a second one")
        return None, None

    def _price(self, handle: Training, plan: TrainingPlan) -> CostEstimate:
        """The server's dry run of the training (and of the captions, when they are asked for): nothing spent."""
        try:
            data = self._http.request("PUT", f"/models/{handle.model_id}/train",
                                      params={"dryRun": "true", "trainingImagesCount": len(plan.images)},
                                      json_body={"parameters": plan.parameters})
        except BadRequestError as exc:
            raise InputError(f"Scenario refused this training: {exc.reason}; nothing was created or "
                             f"charged") from None
        estimate = CostEstimate.parse(data, handle.model_id, {"parameters": plan.parameters,
                                                              "images": len(plan.images)})
        if plan.captions == "auto":
            price = self._captioner.price(plan.images, "action")
            estimate.details["caption"] = price
            estimate.creative_units += price
        return estimate

    def _prepare(self, handle: Training, loaded: list[LocalImage], plan: Union[str, dict, None], *,
                 reuse: Optional[dict] = None) -> None:
        """Captions (asked for all at once), then the upload (side by side), then each caption on its image.
        A reused draft's images (by name) are not uploaded again."""
        if plan == "auto":
            handle._set(stage="captioning")
            handle._notify()
            texts, lost = self._captioner.caption_all(loaded, "action")
            if lost:
                handle._set(note=f"no caption for {', '.join(lost)}: its answer was lost before (it may have been "
                                 f"charged) and it is not asked again")
        else:
            texts = [(plan or {}).get(i.name, "") if isinstance(plan, dict) else "" for i in loaded]
        for image, text in zip(handle.images, texts, strict=True):
            image.caption = text
        handle._set(stage="uploading")
        self._ledger.record_training(handle, before_sending=True)
        handle._notify()

        images = (self._models.model(handle.model_id) if reuse else {}).get("trainingImages") or []
        there = {str(i.get("name")): str(i["id"]) for i in images if isinstance(i, dict) and i.get("id")}
        if reuse:
            self._settle_uploads(handle, images)

        def upload(pair: tuple) -> None:
            image, local = pair
            image.asset_id = there.get(local.name) or self._upload(handle, local)
            self._keep_copy(handle, image, local)
            if image.asset_id and image.caption:
                self._http.request("PUT", f"/assets/{image.asset_id}", json_body={"description": image.caption})

        with ThreadPoolExecutor(max_workers=min(8, len(loaded)), thread_name_prefix="scenario-upload") as pool:
            list(pool.map(upload, zip(handle.images, loaded, strict=True)))
        self._ledger.record_training(handle, before_sending=True)

    def _upload(self, handle: Training, local: LocalImage) -> Optional[str]:
        """One training image, its asset id, through the ledger (its own row, `kind` upload). A 429 is waited out
        (the policy's backoff, `Retry-After` first) and sent again; a lost answer (no answer, 5xx) is looked for
        on the model first (its training images, by name) and sent again only when it is not there; a refusal
        after a lost answer is looked for again (the lost send may have been stored meanwhile)."""
        model_id = handle.model_id
        row = self._ledger.intent("upload", name=handle.name, model_id=model_id, what=f"training image {local.name}")
        lost = False  # an answer was lost: an earlier send may be stored, even if the model did not show it yet
        for attempt in range(UPLOAD_TRIES):
            try:
                answer = self._http.request("POST", f"/models/{model_id}/training-images",
                                            json_body={"name": local.name, "data": local.data_url()})
                found = answer.get("trainingImage")
                found = found[0] if isinstance(found, list) and found else found
                asset_id = (found or {}).get("id")
                self._ledger.settle(row, "success", asset_ids=[asset_id] if asset_id else [],
                                    cost=parse_cost(answer.get("creativeUnitsCost")))
                return asset_id
            except RateLimitError as exc:
                if attempt == UPLOAD_TRIES - 1:
                    self._ledger.settle(row, "not-sent", error=f"refused: {exc.reason}")
                    raise
                time.sleep(self._http.backoff.delay(attempt, exc.retry_after))
            except (APIConnectionError, ServerError) as exc:
                lost = True
                uploaded = self._uploaded(model_id, local.name)
                if uploaded:
                    self._ledger.settle(row, "success", asset_ids=[uploaded])
                    return uploaded
                if attempt == UPLOAD_TRIES - 1:
                    self._ledger.settle(row, "unknown" if uploaded is None else "not-sent", error=str(exc))
                    raise
                time.sleep(self._http.backoff.delay(attempt))
            except APIError as exc:  # refused: nothing stored by this send
                uploaded = self._uploaded(model_id, local.name) if lost else ""
                if uploaded:  # an earlier send was stored after all (the refusal: "already a training image")
                    self._ledger.settle(row, "success", asset_ids=[uploaded])
                    return uploaded
                self._ledger.settle(row, "unknown" if uploaded is None else "not-sent", error=exc.reason)
                raise
            except BaseException:  # interrupted while waiting: it may be on the model
                self._ledger.settle(row, "unknown", error="interrupted while waiting for the answer")
                raise
        return None

    def _settle_uploads(self, handle: Training, images: list) -> None:
        """This model's uploads whose answer was lost, settled by its training images (found by name: it exists;
        missing: it was never stored). Picked by the model's id, not the training's name: a draft is reused by
        its name in any letter case, and its rows keep the name they were written under."""
        try:
            rows = [r for r in self._ledger.history.workbench(self._ledger.backend_id)
                    if r.kind == "upload" and r.model_id == handle.model_id and r.status in ("unknown", "sending")]
        except StorageError:
            return
        there = {str(i.get("name")): str(i["id"]) for i in images if isinstance(i, dict) and i.get("id")}
        for row in rows:
            image = row.prompt.removeprefix("training image ")
            self._ledger.settle(row, "success" if image in there else "not-sent",
                                asset_ids=[there[image]] if image in there else [], error=None)

    def _uploaded(self, model_id: str, name: str) -> Optional[str]:
        """The asset id of the model's training image of this name, "" when it has none, None when the model
        cannot be read."""
        try:
            model = self._models.model(model_id)
        except ScenarioError:
            return None
        return next((str(i["id"]) for i in model.get("trainingImages") or []
                     if isinstance(i, dict) and i.get("name") == name and i.get("id")), "")

    def _keep_copy(self, handle: Training, image: TrainingImage, local: LocalImage) -> None:
        """A local copy of an uploaded image, for the thumbnails only (a failure is a note, nothing more)."""
        if not image.asset_id:
            return
        try:
            image.path = self._store_factory().put(image.asset_id, local.data, local.mime)
        except StorageError as exc:
            handle._set(note=f"no local copy of {local.name}: {exc}")

    def _abandon(self, handle: Training, exc: BaseException, *, recorded: bool, remove: bool = True) -> bool:
        """Remove a model made here whose training was never started (best effort: one that stays is a draft,
        reused by the next training of its name), and say so in the history."""
        for attempt in range(2 if remove else 0):
            try:
                self._http.request("DELETE", f"/models/{handle.model_id}")
                break
            except ScenarioError as error:
                handle._set(note=f"could not remove the untrained model {handle.model_id}: {error}; it is kept "
                                 f"as a draft (%scenario models --drafts)")
                if attempt == 0:
                    time.sleep(self._http.backoff.delay(0))
        if remove and handle.note.startswith("could not remove") and not recorded:
            recorded = True  # a draft left behind: its row lists it (drafts are this project's rows)
        if recorded:
            reason = str(exc) if isinstance(exc, ScenarioError) else ("interrupted" if isinstance(
                exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}")
            handle._set(status="not-started", stage="", error=reason)
            handle._finish()
            self._ledger.record_training(handle)
            handle._settle()
        return recorded
