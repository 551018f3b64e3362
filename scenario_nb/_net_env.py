"""The environment's proxies and CA bundle for a URL, as requests itself would find them (HTTPS_PROXY,
NO_PROXY, REQUESTS_CA_BUNDLE, ...), worked out once per origin and per value of those variables: not on every
request (that costs a third of a poll's CPU), yet a proxy set or unset mid-session (`os.environ[...] = ...`,
`%env`) is honoured by the next request."""

from __future__ import annotations

import os
from typing import Optional
from urllib.parse import urlsplit

import requests

# What requests reads from the environment for an http(s) URL's proxies and CA bundle.
NETWORK_VARIABLES = tuple(name for base in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
                          for name in (base, base.lower())) + ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def network_env() -> tuple:
    """The values of `NETWORK_VARIABLES` now: a few lookups, against the hundreds of microseconds requests
    takes to work the settings out from them."""
    get = os.environ.get
    return tuple(get(name) for name in NETWORK_VARIABLES)


class EnvironmentSettings:
    """Per-origin `proxies`, `verify` and `cert` for requests' `send`, read again when the variables change."""

    def __init__(self) -> None:
        self._env = network_env()
        self._by_origin: dict[tuple, dict] = {}

    def for_url(self, url: str) -> dict:
        origin, env = urlsplit(url)[:2], network_env()
        if env != self._env:  # HTTPS_PROXY, NO_PROXY or a CA bundle changed since: read them again
            self._by_origin, self._env = {}, env
        found = self._by_origin.get(origin)
        if found is None:
            with requests.Session() as reader:  # trust_env on: reads the environment, sends nothing
                found = reader.merge_environment_settings(url, {}, None, None, None)
            found.pop("stream", None)
            self._by_origin[origin] = found
        return found

    def proxy_for(self, url: str) -> Optional[str]:
        """The host:port of the proxy serving this URL, if any (never the credentials a proxy URL may carry)."""
        proxy = requests.utils.select_proxy(url, self.for_url(url).get("proxies") or {})
        if not proxy:
            return None
        parts = urlsplit(proxy if "//" in proxy else f"http://{proxy}")
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
