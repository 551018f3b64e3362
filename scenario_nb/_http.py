"""HTTP transport: credentials, one pooled session, and retries that never pay twice.

Reads and downloads are retried by urllib3's `Retry` (429, 5xx, dropped connections, timeouts; jittered
exponential backoff honouring `Retry-After`). A request that may create a paid job is never re-sent once it
may have reached the server: a lost answer raises `UncertainSubmit` so the engine can find the job. Job
creation has its own gate: after a 429 nobody creates anything until it opens again (the server's
`Retry-After` if it gave one, else our own backoff growing across consecutive 429s); reads never wait on it.

The session honours the environment's proxies and CA bundle (`HTTPS_PROXY`, `NO_PROXY`,
`REQUESTS_CA_BUNDLE`), never `~/.netrc`, and sends the Authorization header to the API's origin only.

The engine's own GETs are the one exception to "everything through requests": it asks about every job again
and again, reads and downloads every output of a batch as the jobs end, and tries each again later whenever
one fails. So each is one GET, never retried in place, on the engine thread's own kept-alive connection to
that host (`get_once` for the API, `download_once` for asset URLs, redirects followed): under half the CPU of
a requests GET, which is what sets how soon the last image of a large batch is local. They take the same CA
bundle, and are not used for a host a proxy serves (then they go through requests).
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import logging
import os
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from ._errors import (APIConnectionError, APITimeoutError, ConfigurationError, NotFoundError,
                      PermissionDeniedError, RateLimitError, ServerError, error_for_status)
from ._env import credentials_from_env, mask
from ._version import USER_AGENT

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


class CreationGate:
    """'Not before' time for creating jobs, shared by every sender of one client.

    A 429 without `Retry-After` (the real API's concurrency 429s carry none) closes it for our own backoff:
    about 1 s, 2 s, 4 s … capped at 30 s, with jitter, growing while 429s keep coming and reset by the first
    job created.
    """

    CAP = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._streak = 0
        self._refused_at = 0.0  # when the last 429 came back (wall clock, as `sent_at`)

    def refused(self, retry_after: Optional[float], sent_at: Optional[float] = None) -> float:
        """Record a 429; returns how long the gate stays closed. A 429 answering a request sent before the
        previous 429 came back (requests sent side by side) is the same refusal: the backoff does not grow."""
        with self._lock:
            if sent_at is None or sent_at >= self._refused_at:
                self._streak += 1
            self._refused_at = time.time()
            if retry_after is None:
                retry_after = min(self.CAP, 2.0 ** (self._streak - 1)) * (0.75 + 0.5 * random.random())
            self._not_before = max(self._not_before, time.monotonic() + retry_after)
            return retry_after

    def created(self) -> None:
        with self._lock:
            self._streak = 0

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - time.monotonic())


class _ReadRetry(Retry):
    """urllib3's Retry with a backoff capped at 8 s and jittered by up to 0.25 s. urllib3 2 takes these as
    `backoff_max=`/`backoff_jitter=`, but 1.26 (which every requests release still admits) has no such
    arguments: computed here, they work on both."""

    BACKOFF_CAP, BACKOFF_JITTER = 8.0, 0.25

    def get_backoff_time(self) -> float:
        backoff = super().get_backoff_time()  # 0 before the second consecutive error
        return min(self.BACKOFF_CAP, backoff + random.random() * self.BACKOFF_JITTER) if backoff > 0 else 0.0


def _read_retry(total: int) -> Retry:
    return _ReadRetry(total=total, connect=total, read=total, status=total, other=0,
                      allowed_methods=frozenset({"GET", "HEAD"}), status_forcelist=(429, 500, 502, 503, 504),
                      backoff_factor=0.5, respect_retry_after_header=True, raise_on_status=False)


class Transport:
    """One pooled session speaking to one API base URL (plus its signed asset URLs)."""

    def __init__(self, credentials: Credentials, *, pool_size: int = 64, max_retries: int = 4,
                 timeout: tuple[float, float] = TIMEOUT) -> None:
        self.credentials = credentials
        self.base_url = credentials.base_url
        self._api_origin = urlsplit(self.base_url)[:2]
        self.timeout = timeout
        self.creation_gate = CreationGate()
        # The environment's proxies and CA bundle are read once per origin (`_settings`), not on every request
        # (a third of a poll's CPU), and with `trust_env` off requests never reads `~/.netrc`: an asset
        # download carries no credentials of any kind, even after a redirect.
        self.session = requests.Session()
        self.session.trust_env = False
        self._origin_settings: dict[tuple, dict] = {}
        self._root: Optional[requests.PreparedRequest] = None  # a GET of the API's root, for `_prepared_get`
        self._kept = threading.local()  # this thread's connections for `get_once` and `download_once`
        self._opened: list[tuple[threading.Thread, tuple, http.client.HTTPConnection]] = []
        self._tls_contexts: dict[tuple, ssl.SSLContext] = {}
        self._opened_lock = threading.Lock()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=_read_retry(max_retries))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r}, key={mask(self.credentials.api_key)})"

    def close(self) -> None:
        self.session.close()
        with self._opened_lock:
            for _, _, connection in self._opened:
                connection.close()
            self._opened.clear()

    def _settings(self, url: str) -> dict:
        """Proxies, CA bundle and client certificate for this URL's origin, from the environment, as requests
        itself would find them (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, ...)."""
        origin = urlsplit(url)[:2]
        found = self._origin_settings.get(origin)
        if found is None:
            with requests.Session() as reader:  # trust_env on: reads the environment, sends nothing
                found = reader.merge_environment_settings(url, {}, None, None, None)
            found.pop("stream", None)
            self._origin_settings[origin] = found
        return found

    # -- API calls ---------------------------------------------------------------------------------
    def _send(self, method: str, path: str, params: Optional[dict], json_body: Any) -> requests.Response:
        started = time.monotonic()
        url = self.base_url + path
        if method == "GET" and not params and json_body is None:
            # A poll asks for the same kind of URL again and again: a copy of the API's root, prepared once,
            # saves most of what preparing a request costs.
            response = self.session.send(self._prepared_get(path), timeout=self.timeout, allow_redirects=False,
                                         **self._settings(url))
        else:
            response = self.session.request(
                method, url, params=params, json=json_body, timeout=self.timeout,
                headers={"Authorization": self.credentials.authorization()}, allow_redirects=False,
                **self._settings(url))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s in %.0f ms", method, path, response.status_code,
                      (time.monotonic() - started) * 1000)
        return response

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

    def request(self, method: str, path: str, *, params: Optional[dict] = None, json_body: Any = None) -> Any:
        """A request that creates nothing paid (reads, dry runs, uploads, cancels): parsed JSON of any 2xx.

        GETs are retried by the adapter; other methods are sent once, and a connection that never
        opened is tried again (nothing reached the server).
        """
        params = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                response = self._send(method, path, params, json_body)
                return _answer(response.status_code, response.headers, response.content, method, path)
            except requests.RequestException as exc:
                if method == "GET" or not _never_sent(exc) or attempt >= 2:
                    raise _connection_error(exc, method, path) from None
            except MalformedAnswer:  # a truncated body is transient: read again (a read only)
                if method != "GET" or attempt >= 2:
                    raise
            time.sleep(0.5 * 2 ** attempt)
            attempt += 1

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    # -- One GET on a kept-alive connection (the engine's polls and output downloads) -------------------
    def get_once(self, path: str) -> Any:
        """GET an API path once, on this thread's kept-alive connection: parsed JSON of a 2xx, else the
        matching `ScenarioError` (`APIConnectionError` for the network). Never retried here: for callers that
        ask again later anyway (the engine's polls). Through requests instead when a proxy serves the API."""
        url = self.base_url + path
        if self._proxied(url) or not _PLAIN_PATH.fullmatch(path):
            return self.get(path)
        try:
            status, headers, content = self._kept_get(url, self._api_headers)
        except _KeptGetFailed as failed:
            raise _network_error(failed.cause, "GET", path, connecting=failed.connecting) from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("GET %s -> %s (kept-alive connection)", path, status)
        return _answer(status, headers, content, "GET", path)

    def download_once(self, url: str) -> bytes:
        """`download`, asked once, on this thread's kept-alive connection to the URL's host (redirects
        followed; credentials only to the API's origin). Never retried here: for the engine, which tries
        again later. Through requests (`download`) when a proxy serves that host."""
        for _ in range(MAX_REDIRECTS + 1):
            if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or self._proxied(url):
                return self.download(url)  # a proxy's host, or no URL at all (requests words the error)
            headers = {"User-Agent": USER_AGENT}
            if urlsplit(url)[:2] == self._api_origin:
                headers["Authorization"] = self.credentials.authorization()
            try:
                status, answer_headers, content = self._kept_get(url, headers)
            except _KeptGetFailed as failed:
                raise APIConnectionError(f"asset download failed ({_short(failed.cause)})") from None
            # Signed URLs are as good as the asset: only the host is logged.
            log.debug("asset download from %s -> %s", urlsplit(url).netloc, status)
            location = answer_headers.get("location")
            if status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                continue
            if status != 200:
                raise _download_error(status, content)
            return content
        raise APIConnectionError(f"asset download failed (more than {MAX_REDIRECTS} redirects)")

    @functools.cached_property
    def _api_headers(self) -> dict:
        return {"Authorization": self.credentials.authorization(), "User-Agent": USER_AGENT,
                "Accept": "application/json"}

    def _proxied(self, url: str) -> bool:
        """A proxy serves this URL's host (then requests speaks to it, as for every other request)."""
        return bool(self._settings(url).get("proxies"))

    def _kept_get(self, url: str, headers: dict) -> tuple[int, Any, bytes]:
        """(status, headers, body) of one GET on this thread's connection to the URL's origin. A connection
        the server closed while it sat idle is replaced once: nothing was asked on it, so nothing is repeated.
        """
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for fresh in (False, True):
            connection, reused = self._kept_connection(parts.scheme, parts.netloc, fresh)
            try:
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                content = response.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if reused and isinstance(exc, _STALE):
                    continue
                raise _KeptGetFailed(exc) from None
            if response.will_close:
                connection.close()
            return response.status, response.headers, content
        raise AssertionError("unreachable")  # pragma: no cover

    def _kept_connection(self, scheme: str, netloc: str, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """(this thread's connection to this origin, whether it served a request before); a new one if
        `fresh`. Raises `_KeptGetFailed` when it cannot connect."""
        kept: Optional[dict] = getattr(self._kept, "connections", None)
        if kept is None:
            kept = self._kept.connections = {}
        origin = (scheme, netloc)
        connection = kept.get(origin)
        if connection is not None and connection.sock is not None and not fresh:
            return connection, True
        host = urlsplit(f"{scheme}://{netloc}")
        connect, read = self.timeout
        if scheme == "https":
            connection = http.client.HTTPSConnection(host.hostname or "", host.port, timeout=connect,
                                                     context=self._tls_context(f"{scheme}://{netloc}/"))
        else:
            connection = http.client.HTTPConnection(host.hostname or "", host.port, timeout=connect)
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            raise _KeptGetFailed(exc, connecting=True) from None
        assert connection.sock is not None
        connection.sock.settimeout(read)
        kept[origin] = connection
        here = threading.current_thread()
        with self._opened_lock:  # connections of threads that have ended are closed here, not left to the GC
            still = []
            for thread, where, old in self._opened:
                if thread.is_alive() and (thread is not here or where != origin):
                    still.append((thread, where, old))
                else:
                    old.close()
            self._opened = [*still, (here, origin, connection)]
        return connection, False

    def _tls_context(self, url: str) -> ssl.SSLContext:
        """What requests would verify this host's certificate against (its CA bundle, or the environment's)."""
        origin = urlsplit(url)[:2]
        context = self._tls_contexts.get(origin)
        if context is not None:
            return context
        settings = self._settings(url)
        verify, cert = settings.get("verify", True), settings.get("cert")
        if verify is False:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        else:
            bundle = verify if isinstance(verify, str) else requests.certs.where()
            context = ssl.create_default_context(cafile=None if os.path.isdir(bundle) else bundle,
                                                 capath=bundle if os.path.isdir(bundle) else None)
        if cert:
            context.load_cert_chain(*cert) if isinstance(cert, tuple) else context.load_cert_chain(cert)
        self._tls_contexts[origin] = context
        return context

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
                raise _connection_error(exc, method, path) from None
            raise UncertainSubmit(str(_connection_error(exc, method, path)), sent_at) from None
        try:
            data = _answer(response.status_code, response.headers, response.content, method, path)
        except RateLimitError as exc:
            self.creation_gate.refused(exc.retry_after, sent_at)
            raise
        except ServerError as exc:
            raise UncertainSubmit(str(exc), sent_at) from None
        self.creation_gate.created()
        return data

    # -- Asset downloads ---------------------------------------------------------------------------
    def download(self, url: str) -> bytes:
        """Fetch a signed asset URL: credentials only ever go to the API's own origin, never elsewhere."""
        headers = {}
        if urlsplit(url)[:2] == self._api_origin:
            headers["Authorization"] = self.credentials.authorization()
        try:
            with self.session.get(url, timeout=self.timeout, headers=headers, allow_redirects=True, stream=True,
                                  **self._settings(url)) as response:
                # Signed URLs are as good as the asset: only the host is logged.
                log.debug("asset download from %s -> %s", urlsplit(url).netloc, response.status_code)
                if response.status_code != 200:
                    raise _download_error(response.status_code, response.content)
                return response.raw.read(decode_content=True)  # in one read: a fraction of the CPU of .content
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise APIConnectionError(f"asset download failed ({_short(exc)})") from None


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
            seconds = float(value)  # seconds (a fraction too, as some servers send)
            if 0 <= seconds < 86400:
                return seconds
        except ValueError:
            pass
        try:
            return Retry().parse_retry_after(value)  # an HTTP date
        except Exception:  # an unreadable header is as good as none
            pass
    if isinstance(body, dict) and isinstance(body.get("remainingSeconds"), (int, float)):
        return float(body["remainingSeconds"])
    return None


def _reason(body: Any, text: str) -> str:
    if isinstance(body, dict):
        for key in ("reason", "message", "error", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    return (text or "").strip()[:300] or "no reason given"


def _download_error(status: int, content: bytes) -> Exception:
    """A refused asset download, in the CDN's own words (its errors are XML, not the API's JSON)."""
    text = content[:2000].decode("utf-8", "replace")
    found = re.search(r"<Message>(.*?)</Message>", text, re.S)
    reason = found[1].strip() if found else _reason(None, text[:200])
    if status in (403, 404):
        cls = PermissionDeniedError if status == 403 else NotFoundError
        return cls(f"asset URL refused: {reason}",
                   hint="signed asset URLs expire; asking the API for the asset again gives a fresh one")
    return error_for_status(status, reason)


class _KeptGetFailed(Exception):
    """A GET on a kept-alive connection failed on the network (`connecting`: before anything was sent)."""

    def __init__(self, cause: BaseException, connecting: bool = False) -> None:
        super().__init__(str(cause))
        self.cause, self.connecting = cause, connecting


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


def _connection_error(exc: requests.RequestException, method: str, path: str) -> APIConnectionError:
    return _network_error(exc, method, path, connecting=_never_sent(exc),
                          timed_out=isinstance(exc, requests.exceptions.Timeout))


_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _network_error(exc: BaseException, method: str, path: str, *, connecting: bool = False,
                   timed_out: Optional[bool] = None) -> APIConnectionError:
    """The one wording of a network failure, through requests or a kept-alive connection (`get_once`)."""
    if timed_out is None:
        timed_out = isinstance(exc, TimeoutError)
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
