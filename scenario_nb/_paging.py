"""Listings page after page: the one loop that follows `nextPaginationToken` (models, jobs, workflows)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, Union

from ._errors import APIError


def paged(get: Callable[..., dict], path: str, key: str, params: dict) -> Iterator[dict]:
    """Every row (an object) of the listing `get(path, **params)[key]`, page after page, read as it is needed.
    Parameters that are None are left out. A token the API hands out twice is an `APIError`: following it would
    go round for ever."""
    params = {k: v for k, v in params.items() if v is not None}
    seen: set = set()
    while True:
        data = get(path, **params)
        yield from (item for item in data.get(key) or [] if isinstance(item, dict))
        token = data.get("nextPaginationToken")
        if not token:
            return
        if token in seen:
            raise APIError(f"the API repeated pagination token on {path}", status_code=500)
        seen.add(token)
        params["paginationToken"] = token


def joined(value: Union[str, Iterable[str], None]) -> Optional[str]:
    """A listing's filter as the API takes it: several values joined by commas ("a,b"); one string as given."""
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)
