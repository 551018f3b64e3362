"""Training handles rebuilt from a history row and/or the API's model (for re-attaching and recovering)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._errors import StorageError
from .._history import TrainingRecord
from .._training import Training, TrainingImage, TrainingOwner

if TYPE_CHECKING:
    from pathlib import Path

    from .._store import FileStore


def training_from(owner: TrainingOwner, record: Optional[TrainingRecord], model: Optional[dict],
                  store: Callable[[], "FileStore"]) -> Training:
    """A handle from a history row and/or the API's model (not followed yet)."""
    model = model or {}
    model_id = record.model_id if record else str(model.get("id"))
    if record is not None and record.images:
        images = [TrainingImage(str(i.get("name") or ""), i.get("asset_id"), str(i.get("caption") or ""),
                                stored_path(store, i.get("asset_id"))) for i in record.images]
    else:
        images = [TrainingImage(str(i.get("name") or ""), i.get("id"),
                                str(i.get("description") or i.get("automaticCaptioning") or ""),
                                stored_path(store, i.get("id")))
                  for i in model.get("trainingImages") or [] if isinstance(i, dict)]
    training = Training(owner, model_id=model_id, name=(record.name if record else "") or
                        model.get("name") or model_id, type=(record.type if record else "") or
                        str(model.get("type") or ""), images=images,
                        parameters=(record.parameters if record else None) or model.get("parameters") or {})
    if record is not None:
        training._set(job_id=record.job_id, cost=record.cost, status=record.status or "new", stage=record.stage,
                      progress=record.progress or 0.0, error=record.error, hint=record.hint,
                      created_at=record.created_at or time.time(), start_sent_at=record.start_sent_at)
    return training


def stored_path(store: Callable[[], "FileStore"], asset_id: Any) -> Optional["Path"]:
    """The local copy of a training image, None when there is none (or the store cannot be read)."""
    if not isinstance(asset_id, str) or not asset_id:
        return None
    try:
        return store().find(asset_id)
    except StorageError:
        return None
