"""What every part of the sandbox shares: its error, ids and timestamps in the API's formats."""

from __future__ import annotations

import random
import time
from typing import Any, Optional

from ._catalog import BASE58


class ApiError(Exception):
    """An answer `{"reason": ...}` (plus any recorded extras) with this HTTP status."""

    def __init__(self, status: int, reason: str, headers: Optional[dict] = None, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers, self.extra = status, reason, headers or {}, extra


def new_id(prefix: str, rng: random.Random) -> str:
    return prefix + "_" + "".join(rng.choice(BASE58) for _ in range(24))


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def found(items: dict, kind: str, ident: Any) -> Any:
    """`items[ident]`, else the API's 404 ("Job job_x not found")."""
    item = items.get(ident)
    if item is None:
        raise ApiError(404, f"{kind} {ident} not found")
    return item
