"""HTTP transport: credentials, one pooled session, retries that never duplicate a paid job.

Reads are retried on 429, 5xx, dropped connections and timeouts with jittered exponential backoff that
honours `Retry-After`. A generation POST is only retried where no job can exist (429, connection
refused); any other failure after it left is reported as `UncertainSubmit` so the client can reconcile.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import os
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from ._errors import (APIConnectionError, APITimeoutError, ConfigurationError, NotFoundError,
                      PermissionDeniedError, RateLimitError, ServerError, error_for_status)

DEFAULT_BASE_URL = "https://api.cloud.scenario.com/v1"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
from ._version import USER_AGENT  # noqa: E402  (the version lives in _version.py only)
log = logging.getLogger("scenario_nb.http")

_KEY_VARS = ("SCENARIO_API_KEY", "SCENARIO_SDK_API_KEY")
_SECRET_VARS = ("SCENARIO_API_SECRET", "SCENARIO_SDK_API_SECRET")
_URL_VARS = ("SCENARIO_API_URL", "SCENARIO_BASE_URL")


def _first_env(names: tuple[str, ...]) -> Optional[str]:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def mask(key: Optional[str]) -> str:
    """Show enough of an API key to recognise it, never enough to use it."""
    if not key:
        return "(not set)"
    return f"{key[:4]}…{key[-2:]}" if len(key) >= 12 else "****"


def credentials_from_env() -> tuple[Optional[str], Optional[str], str]:
    """Key, secret and base URL from the environment (ours first, then the official SDK's names)."""
    return _first_env(_KEY_VARS), _first_env(_SECRET_VARS), _first_env(_URL_VARS) or DEFAULT_BASE_URL


@dataclass(frozen=True)
class Credentials:
    """Resolved credentials. The repr shows the key masked and never the secret."""

    api_key: str
    api_secret: str
    base_url: str

    def __repr__(self) -> str:
        return f"Credentials(api_key={mask(self.api_key)!r}, api_secret='***', base_url={self.base_url!r})"

    @classmethod
    def resolve(cls, api_key: Optional[str] = None, api_secret: Optional[str] = None,
                base_url: Optional[str] = None) -> "Credentials":
        env_key, env_secret, env_url = credentials_from_env()
        key, secret = api_key or env_key, api_secret or env_secret
        url = (base_url or env_url).rstrip("/")
        if not key or not secret:
            missing = " and ".join(n for n, v in (("SCENARIO_API_KEY", key), ("SCENARIO_API_SECRET", secret))
                                   if not v)
            raise ConfigurationError(
                f"no Scenario API credentials: set {missing} in the environment (or pass api_key= and "
                f"api_secret=); create them in Scenario under Project Settings > API Keys")
        if urlsplit(url).scheme not in ("http", "https"):
            raise ConfigurationError(f"the API URL {url!r} is not an http(s) URL; fix SCENARIO_API_URL")
        return cls(key, secret, url)

    def authorization(self) -> str:
        token = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        return f"Basic {token}"


class UncertainSubmit(Exception):
    """A POST left but its answer was lost: a job may or may not exist."""

    def __init__(self, cause: str, sent_at: float) -> None:
        super().__init__(cause)
        self.cause = cause
        self.sent_at = sent_at


class RateGate:
    """Shared 'not before' time: after a 429 nobody sends anything until its Retry-After has passed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_before = 0.0
        self.holds: deque = deque(maxlen=10_000)  # (when the 429 arrived, until), monotonic: for benchmarks

    def hold_until(self, when: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, when)
            self.holds.append((time.monotonic(), when))

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - time.monotonic())

    def wait(self) -> None:
        while True:
            delay = self.remaining()
            if delay <= 0:
                return
            time.sleep(min(delay, 0.5))


def _retry_after(response: requests.Response, body: Any) -> Optional[float]:
    headers = response.headers
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    if isinstance(body, dict) and isinstance(body.get("remainingSeconds"), (int, float)):
        return float(body["remainingSeconds"])
    return None


def _reason(body: Any, text: str) -> str:
    if isinstance(body, dict):
        for key in ("reason", "message", "error", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    return (text or "").strip()[:300] or "no reason given"


def backoff(attempt: int) -> float:
    """Jittered exponential backoff: about 0.5 s, 1 s, 2 s … capped at 8 s."""
    return min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())


class Transport:
    """One pooled `requests.Session` speaking to one API base URL."""

    def __init__(self, credentials: Credentials, *, pool_size: int = 64, max_retries: int = 4,
                 timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)) -> None:
        self.credentials = credentials
        self.base_url = credentials.base_url
        self._api_origin = urlsplit(self.base_url)[:2]
        self.max_retries = max_retries
        self.timeout = timeout
        self.gate = RateGate()
        self.session = requests.Session()
        self.session.trust_env = False  # never pick up netrc credentials for other hosts
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.on_request: Optional[Callable[[str, str], None]] = None  # hook for counting, tests, benchmarks

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r}, key={mask(self.credentials.api_key)})"

    def close(self) -> None:
        self.session.close()

    # -- API calls ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: Optional[dict] = None, json_body: Any = None,
                submit: bool = False, retries: Optional[int] = None) -> tuple[int, Any]:
        """Send an API request; returns (status, parsed JSON) for any 2xx (269 included).

        `submit=True` marks a request that may create a paid job: it is never re-sent once it may have
        reached the server, and a lost answer raises `UncertainSubmit`.
        """
        url = self.base_url + path
        max_retries = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            self.gate.wait()
            if self.gate.remaining() > 0:  # another thread just got a 429
                continue
            sent_at = time.time()
            try:
                if self.on_request:
                    self.on_request(method, path)
                response = self.session.request(
                    method, url, params=params, json=json_body, timeout=self.timeout,
                    headers={"Authorization": self.credentials.authorization()}, allow_redirects=False)
            except requests.exceptions.ConnectTimeout:
                error: Exception = APITimeoutError(f"could not connect to {self.base_url} in time")
                never_sent = True
            except requests.exceptions.Timeout:
                error = APITimeoutError(f"{method} {path} got no answer in {self.timeout[1]:g} s")
                never_sent = False
            except requests.exceptions.ConnectionError as exc:
                never_sent = _never_connected(exc)
                error = APIConnectionError(
                    f"could not reach {self.base_url} ({_short(exc)}); check the URL and your network"
                    if never_sent else f"the connection dropped during {method} {path}")
            else:
                status = response.status_code
                log.debug("%s %s -> %s in %.0f ms", method, path, status, (time.time() - sent_at) * 1000)
                body, parsed = _parse_json(response)
                if 200 <= status < 300:
                    if parsed:
                        return status, body
                    error, never_sent = ServerError(f"malformed JSON in the answer to {method} {path}",
                                                    status_code=status), False
                else:
                    retry_after = _retry_after(response, body)
                    error = error_for_status(status, _reason(body, response.text), body, retry_after)
                    if status == 429:
                        wait = retry_after if retry_after is not None else backoff(attempt)
                        self.gate.hold_until(time.monotonic() + wait)
                        never_sent = True  # a 429 creates nothing
                    elif status >= 500:
                        never_sent = False
                    else:
                        raise error
            # Decide whether to try again.
            if submit and not never_sent:
                raise UncertainSubmit(str(error), sent_at) from error
            if attempt >= max_retries:
                raise error
            if not isinstance(error, RateLimitError):
                time.sleep(backoff(attempt))
            attempt += 1

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})[1]

    # -- Asset downloads ---------------------------------------------------------------------------
    def download(self, url: str) -> bytes:
        """Fetch a signed asset URL. The Authorization header is only ever sent to the API's origin."""
        headers = {}
        if urlsplit(url)[:2] == self._api_origin:
            headers["Authorization"] = self.credentials.authorization()
        attempt = 0
        while True:
            try:
                response = self.session.get(url, timeout=self.timeout, headers=headers, allow_redirects=True)
            except requests.exceptions.RequestException as exc:
                error: Exception = APIConnectionError(f"asset download failed ({_short(exc)})")
            else:
                # Signed URLs are as good as the asset: only the host is logged.
                log.debug("asset download from %s -> %s", urlsplit(url).netloc, response.status_code)
                if response.status_code == 200:
                    return response.content
                error = _download_error(response)
                if response.status_code < 500 and response.status_code != 429:
                    raise error  # 403/404: the caller refreshes the signed URL
            if attempt >= self.max_retries:
                raise error
            time.sleep(backoff(attempt))
            attempt += 1


def _download_error(response: requests.Response) -> Exception:
    """A refused asset download, in the CDN's own words (its errors are XML, not the API's JSON)."""
    found = re.search(r"<Message>(.*?)</Message>", response.text[:2000], re.S)
    reason = found[1].strip() if found else _reason(None, response.text[:200])
    if response.status_code in (403, 404):
        cls = PermissionDeniedError if response.status_code == 403 else NotFoundError
        return cls(f"asset URL refused: {reason}",
                   hint="signed asset URLs expire; asking the API for the asset again gives a fresh one")
    return error_for_status(response.status_code, reason)


def _parse_json(response: requests.Response) -> tuple[Any, bool]:
    if not response.content:
        return {}, True
    try:
        return response.json(), True
    except ValueError:
        return None, False


def _never_connected(exc: Exception) -> bool:
    """True when the request provably never reached the server (refused, DNS failure)."""
    text = repr(exc)
    return any(marker in text for marker in ("NewConnectionError", "Connection refused", "NameResolutionError",
                                             "Failed to resolve"))


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "RemoteDisconnected"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__

