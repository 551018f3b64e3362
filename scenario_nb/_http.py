"""HTTP transport: credentials, one pooled requests session, and retries that never pay twice.

Every call goes through one requests `Session` per client (API calls and asset downloads alike, kept-alive
connections in a pool sized to the engine's threads). Reads are retried in place by urllib3's `Retry` (429,
5xx, dropped connections, timeouts; the server's `Retry-After` first, else the backoff policy's wait), except
the engine's own (`get_once`, `download_once`): it asks again later, so they are tried once. A request that
may create a paid job is never re-sent once it may have reached the server: a lost answer raises
`UncertainSubmit` so the engine can find the job. Job creation has its own gate (`_backoff.CreationGate`);
every wait, and every URL a server answered with `Retry-After`, is the backoff policy's (`_backoff.Backoff`).

The session honours the environment's proxies and CA bundle (`HTTPS_PROXY`, `NO_PROXY`, `REQUESTS_CA_BUNDLE`)
as they are when a request is sent, never `~/.netrc`, and sends the Authorization header to the API's origin only.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import functools
import itertools
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from ._backoff import Backoff, CreationGate
from ._errors import (APIConnectionError, APITimeoutError, ConfigurationError, NotFoundError,
                      PermissionDeniedError, RateLimitError, ServerError, error_for_status)
from ._env import credentials_from_env, mask
from ._net_env import EnvironmentSettings
from ._version import USER_AGENT

__all__ = ["Backoff", "CreationGate", "Credentials", "MalformedAnswer", "Transport", "UncertainSubmit"]

TIMEOUT = (5.0, 60.0)  # connect, read (seconds)
MAX_REDIRECTS = 10
_PLAIN_PATH = re.compile(r"(/[A-Za-z0-9_.~-]+)+")  # an API path with nothing to quote
log = logging.getLogger("scenario_nb.http")

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
    """A paid request left but its answer was lost: a job may or may not exist."""

    def __init__(self, cause: str, sent_at: float) -> None:
        super().__init__(cause)
        self.cause = cause
        self.sent_at = sent_at


class MalformedAnswer(ServerError):
    """A 2xx whose body is not JSON (cut short, or a proxy's page)."""


class _ReadRetry(Retry):
    """urllib3's Retry (reads only; the server's `Retry-After` first) whose own waits the client's backoff
    policy computes, capped at 8 s: on urllib3 1.26 too, which has no `backoff_max=`."""

    policy = Backoff()  # the transport's own, carried to each copy urllib3 makes (`new`)

    def new(self, **kw: Any) -> "_ReadRetry":
        retry = super().new(**kw)
        retry.policy = self.policy
        return retry

    def get_backoff_time(self) -> float:
        errors = len(list(itertools.takewhile(lambda h: h.redirect_location is None, reversed(self.history))))
        return 0.0 if errors <= 1 else self.policy.delay(errors - 1, base=self.backoff_factor, cap=8.0)


def _read_retry(total: int) -> _ReadRetry:
    return _ReadRetry(total=total, connect=total, read=total, status=total, other=0,
                      allowed_methods=frozenset({"GET", "HEAD"}), status_forcelist=(429, 500, 502, 503, 504),
                      backoff_factor=0.5, respect_retry_after_header=True, raise_on_status=False)


_REDIRECTS = (301, 302, 303, 307, 308)
# One try, nothing retried in place (a dropped pooled connection is replaced before anything is sent on it).
_ONCE = Retry(0, read=False)


class _Adapter(HTTPAdapter):
    """requests' adapter, whose urllib3 `Retry` the transport sets aside for one thread's call (`once`)."""

    def __init__(self, retry: Retry, pool_size: int) -> None:
        self.once = threading.local()
        super().__init__(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)

    @property
    def max_retries(self) -> Retry:
        return _ONCE if getattr(self.once, "on", False) else self._retry

    @max_retries.setter
    def max_retries(self, value: Retry) -> None:
        self._retry = value


class Transport:
    """One requests session speaking to one API base URL (plus its signed asset URLs), for every call."""

    def __init__(self, credentials: Credentials, *, pool_size: int = 16, max_retries: int = 4,
                 timeout: tuple[float, float] = TIMEOUT) -> None:
        self.credentials = credentials
        self.base_url = credentials.base_url
        self._api_origin = urlsplit(self.base_url)[:2]
        self.timeout = timeout
        self.backoff = Backoff()
        self.creation_gate = CreationGate(self.backoff)
        # The environment's proxies and CA bundle come from `EnvironmentSettings` (cached, following the
        # variables), and with `trust_env` off requests never reads `~/.netrc`: an asset download carries no
        # credentials of any kind, and redirects to another host drop Authorization.
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.max_redirects = MAX_REDIRECTS
        self._env_settings = EnvironmentSettings()
        self._root: Optional[requests.PreparedRequest] = None  # a GET of the API's root, for `_prepared_get`
        self._pool_keys: dict[tuple, tuple] = {}  # origin, CA, cert -> the adapter's pool key (`_pooled_get`)
        self._timeouts = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        retry = _read_retry(max_retries)
        retry.policy = self.backoff
        self._adapter = _Adapter(retry, pool_size)  # pool: as many connections as the engine has threads
        self.session.mount("http://", self._adapter)
        self.session.mount("https://", self._adapter)
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r}, key={mask(self.credentials.api_key)})"

    def close(self) -> None:
        self.session.close()

    def _settings(self, url: str) -> dict:
        """Proxies, CA bundle and client certificate for this URL's origin, from the environment as it is now."""
        return self._env_settings.for_url(url)

    def _network_error(self, exc: requests.RequestException, method: str, path: str) -> APIConnectionError:
        return _connection_error(exc, method, path, self._env_settings.proxy_for(self.base_url + path))

    @contextlib.contextmanager
    def _once(self, once: bool = True) -> Iterator[None]:
        """Requests of this thread, inside, are tried once: the engine asks again later, after the policy's wait."""
        self._adapter.once.on = once
        try:
            yield
        finally:
            self._adapter.once.on = False

    def _not_held(self, url: str, once: bool) -> None:
        """The server's `Retry-After` for this URL: waited out, or (`once`: the engine's calls, which never
        wait in place) a `RateLimitError` with nothing sent."""
        wait = self.backoff.held(_key(url))
        if wait and once:
            raise RateLimitError(f"the server asked for {wait:.1f} s more before this URL is asked again",
                                 retry_after=wait, status_code=429)
        if wait:
            time.sleep(wait)

    # -- API calls ---------------------------------------------------------------------------------
    def _pooled_get(self, url: str, headers: dict) -> Optional[_Answer]:
        """One GET, tried once, on the session adapter's own pool for this URL's origin (its kept-alive
        connections, CA bundle and client certificate), without requests' per-request layers (preparing,
        cookies, hooks, its Response): the engine's polls, asset reads and downloads, where those layers cost
        over half the CPU. None when a proxy serves the host (then requests speaks to it). Raises requests'
        exceptions, as requests would."""
        settings = self._settings(url)
        if settings.get("proxies"):
            return None
        parts = urlsplit(url)
        verify, cert = settings.get("verify", True), settings.get("cert")
        key = self._pool_keys.get((parts[:2], verify, cert))
        if key is None:
            root = requests.Request("GET", f"{parts.scheme}://{parts.netloc}/").prepare()
            key = self._pool_keys[parts[:2], verify, cert] = self._adapter.build_connection_pool_key_attributes(
                root, verify, cert)
        try:
            pool = self._adapter.poolmanager.connection_from_host(**key[0], pool_kwargs=key[1])
            response = pool.urlopen("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers,
                                    retries=_ONCE, redirect=False, assert_same_host=False, timeout=self._timeouts)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _requests_error(exc) from None
        return _Answer(response.status, response.headers, response.data)

    def _send(self, method: str, path: str, params: Optional[dict], json_body: Any, once: bool = False) -> _Answer:
        started = time.monotonic()
        url = self.base_url + path
        plain_get = method == "GET" and not params and json_body is None
        answer = self._pooled_get(url, self._api_headers) if once and plain_get else None
        if answer is None:
            if plain_get:  # a copy of the API's root, prepared once, saves most of what preparing costs
                response = self.session.send(self._prepared_get(path), timeout=self.timeout,
                                             allow_redirects=False, **self._settings(url))
            else:
                response = self.session.request(
                    method, url, params=params, json=json_body, timeout=self.timeout,
                    headers={"Authorization": self.credentials.authorization()}, allow_redirects=False,
                    **self._settings(url))
            answer = _Answer(response.status_code, response.headers, response.content)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s in %.0f ms", method, path, answer.status, (time.monotonic() - started) * 1000)
        return answer

    def _prepared_get(self, path: str) -> requests.PreparedRequest:
        """A GET of this API path, ready to send: the API's root prepared once, the path put after it when it
        needs no quoting (job and asset ids), else prepared in full. A copy: never shared between threads."""
        if self._root is None:
            self._root = self.session.prepare_request(requests.Request(
                "GET", self.base_url + "/", headers={"Authorization": self.credentials.authorization()}))
        if _PLAIN_PATH.fullmatch(path):
            prepared = self._root.copy()
            prepared.url = self._root.url.rstrip("/") + path  # type: ignore[union-attr]
            return prepared
        return self.session.prepare_request(requests.Request(
            "GET", self.base_url + path, headers={"Authorization": self.credentials.authorization()}))

    def _read(self, answer: _Answer, method: str, path: str) -> Any:
        """`_answer`, remembering the server's `Retry-After` for this URL (the policy's `hold`)."""
        if answer.status == 429:
            self.backoff.hold(_key(self.base_url + path), _retry_after(answer.headers, None))
        return _answer(answer.status, answer.headers, answer.content, method, path)

    def request(self, method: str, path: str, *, params: Optional[dict] = None, json_body: Any = None,
                once: bool = False) -> Any:
        """A request that creates nothing paid (reads, dry runs, uploads, cancels): parsed JSON of any 2xx.

        GETs are retried by the adapter; other methods are sent once, and a connection that never
        opened is tried again here, three times in all (nothing reached the server). `once`: a GET asked
        once, never retried or waited for in place (the engine's polls and asset reads: it asks again later).
        """
        params = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            self._not_held(self.base_url + path, once)
            try:
                with self._once(once or method != "GET"):  # others: tried again here only if never sent
                    response = self._send(method, path, params, json_body, once)
                return self._read(response, method, path)
            except requests.RequestException as exc:
                if once or method == "GET" or not _never_sent(exc) or attempt >= 2:
                    raise self._network_error(exc, method, path) from None
            except MalformedAnswer:  # a truncated body is transient: read again (a read only)
                if once or method != "GET" or attempt >= 2:
                    raise
            time.sleep(self.backoff.delay(attempt))
            attempt += 1

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def get_once(self, path: str) -> Any:
        """GET an API path once (the engine's polls and asset reads): parsed JSON of a 2xx, else the matching
        `ScenarioError`; a URL the server asked to wait for is not asked (`RateLimitError`)."""
        return self.request("GET", path, once=True)

    def create(self, method: str, path: str, json_body: Any) -> Any:
        """Send a request that may create a paid job, exactly once.

        Raises `RateLimitError` (nothing created; the creation gate is now closed), another `APIError` for a
        4xx (nothing created), `APIConnectionError` when the connection never opened (nothing sent), and
        `UncertainSubmit` for anything after the request may have reached the server.
        """
        sent_at = time.time()
        try:
            response = self._send(method, path, None, json_body)
        except requests.RequestException as exc:
            if _never_sent(exc):
                raise self._network_error(exc, method, path) from None
            raise UncertainSubmit(str(self._network_error(exc, method, path)), sent_at) from None
        try:
            data = _answer(response.status, response.headers, response.content, method, path)
        except RateLimitError as exc:
            self.creation_gate.refused(exc.retry_after, sent_at)
            raise
        except ServerError as exc:
            raise UncertainSubmit(str(exc), sent_at) from None
        self.creation_gate.created()
        return data

    # -- Asset downloads ---------------------------------------------------------------------------
    def download(self, url: str, *, once: bool = False) -> bytes:
        """Fetch a signed asset URL, redirects followed: credentials only ever go to the API's own origin.
        `once`: asked once, never retried or waited for in place (the engine, which asks again later)."""
        asked, answer, hops = url, None, 0
        try:
            if isinstance(url, str):
                self._not_held(url, once)
            while once and isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
                answer = self._pooled_get(url, self._download_headers(url))  # credentials to the API's origin only
                if answer is None or answer.status not in _REDIRECTS or not answer.headers.get("location"):
                    break
                if hops == MAX_REDIRECTS:
                    raise requests.TooManyRedirects()
                url, answer, hops = urljoin(url, answer.headers["location"]), None, hops + 1
            if answer is None:  # not the engine's, or a host a proxy serves: requests follows any redirects
                with self._once(once), self.session.get(url, timeout=self.timeout, headers=self._download_headers(url),
                                                        stream=True, **self._settings(url)) as response:
                    content = response.raw.read(decode_content=True)  # in one read: a fraction of .content's CPU
                    answer = _Answer(response.status_code, response.headers, content)
        except requests.TooManyRedirects:
            raise APIConnectionError(f"asset download failed (more than {MAX_REDIRECTS} redirects)") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            proxy = self._env_settings.proxy_for(url) if isinstance(exc, requests.exceptions.ProxyError) else None
            raise APIConnectionError(f"asset download failed{f' through the proxy {proxy}' if proxy else ''} "
                                     f"({_short(exc)})") from None
        # Signed URLs are as good as the asset: only the host is logged.
        log.debug("asset download from %s -> %s", urlsplit(url).netloc, answer.status)
        if answer.status != 200:
            if answer.status == 429:
                self.backoff.hold(_key(asked), _retry_after(answer.headers, None))
            raise _download_error(answer.status, answer.content, answer.headers)
        return answer.content

    def _download_headers(self, url: Any) -> dict:
        """Credentials for the API's own origin only."""
        if isinstance(url, str) and urlsplit(url)[:2] == self._api_origin:
            return self._api_headers
        return {"User-Agent": USER_AGENT}

    @functools.cached_property
    def _api_headers(self) -> dict:
        return {"Authorization": self.credentials.authorization(), "User-Agent": USER_AGENT,
                "Accept": "application/json"}

    def download_once(self, url: str) -> bytes:
        return self.download(url, once=True)


class _Answer(NamedTuple):
    status: int
    headers: Any  # looks names up in any case
    content: bytes


def _requests_error(exc: Exception) -> requests.RequestException:
    """urllib3's error as requests words it (what `_never_sent` and `_connection_error` read)."""
    reason = exc.reason if isinstance(exc, MaxRetryError) else exc
    if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):  # a refusal's
        return requests.ConnectTimeout(exc)  # class is a ConnectTimeoutError too: requests tells them apart
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return requests.ReadTimeout(exc)
    return requests.ConnectionError(exc)


def _key(url: str) -> str:
    """What a `Retry-After` is remembered by: the URL without its query (a signed URL renewed is the same)."""
    return url.split("?", 1)[0]


def _answer(status: int, headers: Any, content: bytes, method: str, path: str) -> Any:
    """Parsed JSON of a 2xx (269 included), else the matching APIError with the server's reason."""
    body, parsed = _parse_json(content)
    if 200 <= status < 300:
        if parsed:
            return body
        raise MalformedAnswer(f"malformed JSON in the answer to {method} {path}", status_code=status)
    text = content.decode("utf-8", "replace")
    raise error_for_status(status, _reason(body, text), body, _retry_after(headers, body))


def _retry_after(headers: Any, body: Any) -> Optional[float]:
    """The server's own wait, if it gave one (header, or a cooldown 429's `remainingSeconds`)."""
    value = headers.get("retry-after")  # both kinds of headers here look names up in any case
    if value is not None:
        try:
            seconds: Optional[float] = float(value)  # seconds (a fraction too, as some servers send)
        except ValueError:  # an HTTP date (urllib3's parser would cap one days ahead at its own 6 hours)
            try:
                date = email.utils.parsedate_tz(value)
                seconds = max(0.0, email.utils.mktime_tz(date) - time.time()) if date else None
            except (ValueError, OverflowError):  # an unreadable header is as good as none
                seconds = None
        if seconds is not None and 0 <= seconds < 86400:  # a day or more (or less than 0): as good as none
            return seconds
    if isinstance(body, dict) and isinstance(body.get("remainingSeconds"), (int, float)):
        return float(body["remainingSeconds"])
    return None


def _reason(body: Any, text: str) -> str:
    if isinstance(body, dict):
        for key in ("reason", "message", "error", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    return (text or "").strip()[:300] or "no reason given"


def _download_error(status: int, content: bytes, headers: Any = None) -> Exception:
    """A refused asset download, in the CDN's own words (its errors are XML, not the API's JSON)."""
    text = content[:2000].decode("utf-8", "replace")
    found = re.search(r"<Message>(.*?)</Message>", text, re.S)
    reason = found[1].strip() if found else _reason(None, text[:200])
    if status in (403, 404):
        cls = PermissionDeniedError if status == 403 else NotFoundError
        return cls(f"asset URL refused: {reason}",
                   hint="signed asset URLs expire; asking the API for the asset again gives a fresh one")
    return error_for_status(status, reason, None, _retry_after(headers or {}, None))


def _parse_json(content: bytes) -> tuple[Any, bool]:
    if not content:
        return {}, True
    try:
        return json.loads(content), True
    except ValueError:
        return None, False


def _root_cause(exc: BaseException) -> BaseException:
    """The urllib3 error under a requests error (through MaxRetryError)."""
    cause: Any = exc.args[0] if exc.args else exc
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    return cause if isinstance(cause, BaseException) else exc


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request provably never reached the server (connection refused, DNS, connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ProxyError):
        return False
    return isinstance(exc, requests.exceptions.ConnectionError) and \
        isinstance(_root_cause(exc), (NewConnectionError, ConnectTimeoutError))


def _connection_error(exc: requests.RequestException, method: str, path: str,
                      proxy: Optional[str] = None) -> APIConnectionError:
    """The one wording of a network failure; `proxy`: the host:port of the proxy the request went to."""
    if isinstance(exc, requests.exceptions.ProxyError):  # the proxy named in the environment, not the API
        named = f" {proxy}" if proxy else ""
        return APIConnectionError(f"could not reach the API through the proxy{named} set in the environment "
                                  f"(HTTPS_PROXY / HTTP_PROXY) during {method} {path} ({_short(exc)}); check that the "
                                  f"proxy runs, or unset it or add the API's host to NO_PROXY")
    connecting, timed_out = _never_sent(exc), isinstance(exc, requests.exceptions.Timeout)
    if connecting:
        if timed_out:
            return APITimeoutError("could not connect to the API in time; check your network or proxy")
        return APIConnectionError(f"could not reach the API ({_short(exc)}); check the URL, your network "
                                  f"and any HTTPS_PROXY setting")
    if timed_out:
        return APITimeoutError(f"{method} {path} got no answer in time")
    return APIConnectionError(f"the connection dropped during {method} {path} ({_short(exc)})")


def _short(exc: BaseException) -> str:
    cause = _root_cause(exc)
    text = str(cause)
    for marker in ("Connection refused", "Name or service not known", "timed out", "RemoteDisconnected",
                   "Connection reset"):
        if marker in text:
            return marker.lower()
    return type(cause).__name__
