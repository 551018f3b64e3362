"""The sandbox's route table: a request's method and path (`jobs/{job_id}`) name the function that answers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional


@dataclass
class Request:
    """One API call as a route sees it: the path's named parts in `params`, the body parsed from JSON."""

    sandbox: Any  # the running Sandbox: its state, options, counters and fault controls
    method: str
    path: str
    params: dict
    query: dict
    body: Any
    now: float

    @property
    def state(self) -> Any:
        return self.sandbox.state

    @property
    def cdn(self) -> str:
        return self.sandbox.cdn_url


Handler = Callable[[Request], tuple]  # answers (status, payload)
Route = tuple[str, str, Handler]  # method, pattern (`models/{model_id}/train`; a last `*`: any rest), handler


class Routes:
    """Finds the first route whose method and pattern match, in the order given."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._rows = [(method, pattern.split("/"), handler) for method, pattern, handler in routes]

    def find(self, method: str, parts: list) -> Optional[tuple[Handler, dict]]:
        for row_method, segments, handler in self._rows:
            params = _match(segments, parts) if row_method == method else None
            if params is not None:
                return handler, params
        return None


def _match(segments: list, parts: list) -> Optional[dict]:
    if segments[-1] == "*":
        segments = segments[:-1]
        parts = parts[:len(segments)] if len(parts) >= len(segments) else []
    if len(parts) != len(segments):
        return None
    params = {}
    for segment, part in zip(segments, parts, strict=True):
        if segment.startswith("{"):
            params[segment[1:-1]] = part
        elif segment != part:
            return None
    return params
